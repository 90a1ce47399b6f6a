// Guest physical memory layout of a ringzero x86-64 machine.
//
// Everything a loader, a table builder or a device needs to agree on lives
// here, so that the E820 map, the ACPI tables and the bus never disagree.
#pragma once

#include <cstdint>

namespace rz::x86 {

inline constexpr uint64_t KiB = 1024;
inline constexpr uint64_t MiB = 1024 * KiB;
inline constexpr uint64_t GiB = 1024 * MiB;

// --- Low memory (below 1 MiB) -------------------------------------------
inline constexpr uint64_t kGdtAddr = 0x500;          // flat GDT for 64-bit entry
inline constexpr uint64_t kPvhStartInfoAddr = 0x6000; // PVH hvm_start_info + memmap
inline constexpr uint64_t kZeroPageAddr = 0x7000;    // Linux boot_params
inline constexpr uint64_t kPml4Addr = 0x9000;        // identity page tables:
inline constexpr uint64_t kPdptAddr = 0xa000;        //   PML4, PDPT and four PDs
inline constexpr uint64_t kPdAddr = 0xb000;          //   (0xb000..0xefff), 2 MiB pages
inline constexpr uint64_t kBootStackTop = 0x8ff0;    // initial RSP (0x8000..0x8fff)
inline constexpr uint64_t kCmdlineAddr = 0x20000;
inline constexpr uint64_t kCmdlineMax = 0x10000;     // 64 KiB, bytes incl. NUL
inline constexpr uint64_t kEbdaStart = 0x9fc00;      // RAM below this is usable
inline constexpr uint64_t kAcpiBase = 0xe0000;       // RSDP first, then the tables
inline constexpr uint64_t kAcpiMaxSize = 0x20000;    // up to 1 MiB
inline constexpr uint64_t kHighMemStart = 0x100000;  // 1 MiB

// --- The 32-bit MMIO hole: [3 GiB, 4 GiB) holds no RAM ------------------
inline constexpr uint64_t kMmioHoleStart = 3 * GiB;
inline constexpr uint64_t kMmioHoleEnd = 4 * GiB;
inline constexpr uint64_t kPciMmio32Start = 0xc0000000;  // 32-bit BAR window
inline constexpr uint64_t kPciMmio32End = 0xe0000000;
inline constexpr uint64_t kPciEcamBase = 0xe0000000;     // bus 0 only
inline constexpr uint64_t kPciEcamSize = 1 * MiB;
inline constexpr uint64_t kIoapicAddr = 0xfec00000;
inline constexpr uint64_t kLapicAddr = 0xfee00000;
inline constexpr uint64_t kRamAbove4gStart = 4 * GiB;

// --- Legacy I/O ports ----------------------------------------------------
inline constexpr uint16_t kCom1Port = 0x3f8;
inline constexpr uint8_t kCom1Irq = 4;
inline constexpr uint16_t kI8042DataPort = 0x60;
inline constexpr uint16_t kI8042CmdPort = 0x64;
inline constexpr uint16_t kCmosPort = 0x70;          // 0x70 index, 0x71 data
inline constexpr uint16_t kPvpanicPort = 0x505;
// ACPI fixed hardware, one block of 16 ports:
//   +0 PM1a_STS (2)  +2 PM1a_EN (2)  +4 PM1a_CNT (2)  +8 RESET_REG (1)
inline constexpr uint16_t kAcpiPmBase = 0x600;
inline constexpr uint16_t kAcpiPm1aEvtPort = kAcpiPmBase + 0;
inline constexpr uint16_t kAcpiPm1aCntPort = kAcpiPmBase + 4;
inline constexpr uint16_t kAcpiResetPort = kAcpiPmBase + 8;
inline constexpr uint8_t kAcpiResetValue = 0x01;
inline constexpr uint8_t kAcpiSciIrq = 9;
// SLP_TYP value for S5 that the DSDT's \_S5 package and the PM device agree on.
inline constexpr uint8_t kSlpTypS5 = 5;

}  // namespace rz::x86
