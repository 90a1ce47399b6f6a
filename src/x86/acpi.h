// ACPI tables generated in code: RSDP, XSDT, FADT (+FACS), MADT, DSDT, MCFG.
#pragma once

#include <cstdint>
#include <vector>

#include "x86/layout.h"

namespace rz::x86 {

struct AcpiConfig {
  uint32_t num_cpus = 1;          // one Processor Local APIC each, APIC ID = index
  uint64_t base = kAcpiBase;      // GPA of the RSDP; the other tables follow it
  bool pvpanic = true;            // DSDT device QEMU0001 at kPvpanicPort
  // PCI root bus (issue 4). When ecam_base is 0 no MCFG / PCI0 is emitted.
  uint64_t ecam_base = 0;
  uint8_t pci_bus_end = 0;
  uint64_t pci_mmio32_start = 0, pci_mmio32_end = 0;   // [start, end)
  uint64_t pci_mmio64_start = 0, pci_mmio64_end = 0;   // [start, end), 0 = none
  // false: the FADT says there is no fixed-feature power button (PWR_BUTTON
  // flag). true: the PM device implements PM1 PWRBTN_STS/EN and raises the
  // SCI, so the VMM can ask the guest to shut down.
  bool fixed_power_button = false;
};

struct AcpiImage {
  uint64_t base = 0;              // GPA where `bytes` must be copied
  uint64_t rsdp_addr = 0;         // == base
  std::vector<uint8_t> bytes;     // all tables, back to back, checksummed
};

// Legacy INTx routing on PCI bus 0, as the DSDT's _PRT describes it: pin
// (0 = INTA .. 3 = INTD; the config-space Interrupt Pin register is pin + 1)
// of device `slot` drives I/O APIC input 16 + (slot + pin) % 4. Rotating by
// the slot number spreads single-function devices, which almost all use
// INTA, over the four GSIs, the same swizzle a PCI-to-PCI bridge applies.
// GSIs 16-19 are level-triggered, active-low.
inline constexpr uint32_t kPciIntxGsiBase = 16;
constexpr uint32_t pci_intx_gsi(uint8_t slot, uint8_t pin) {
  return kPciIntxGsiBase + (slot + pin) % 4;
}

// Builds the whole set. Throws rz::Error if it would exceed kAcpiMaxSize.
AcpiImage build_acpi_tables(const AcpiConfig& cfg);

}  // namespace rz::x86
