// Initial register state for the boot vCPU, and the structures in guest
// memory it needs (GDT, identity page tables), for each entry mode.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "memory/guest_memory.h"

namespace rz::x86 {

enum class CpuMode { Long64, Protected32 };

// Writes the flat GDT at kGdtAddr and, for Long64, identity page tables
// mapping the first 4 GiB with 2 MiB pages at kPml4Addr.
void write_boot_structures(const memory::GuestMemory& mem, CpuMode mode);

// Segment and control registers for entering at `mode` (starting from the
// vCPU's current sregs, which keep KVM's defaults for everything else).
void setup_sregs(kvm_sregs& s, CpuMode mode);

// General registers: entry point, flags, and the boot-info pointer in RSI
// (Linux) or RBX (PVH).
kvm_regs boot_regs(uint64_t entry, uint64_t rsi, uint64_t rbx);

kvm_fpu boot_fpu();

// MSRs the boot protocol expects; `supported` filters out those KVM does
// not list (a software KVM may lack some).
std::vector<std::pair<uint32_t, uint64_t>> boot_msrs(const std::vector<uint32_t>& supported);

// GDT descriptors, exposed for tests: flat 64-bit code, 32-bit code, data, TSS.
inline constexpr uint16_t kBootCs = 0x10;
inline constexpr uint16_t kBootDs = 0x18;
inline constexpr uint16_t kBootTss = 0x20;
uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit);

}  // namespace rz::x86
