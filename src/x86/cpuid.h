// CPUID policy: what each vCPU sees, derived from what KVM supports.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

namespace rz::x86 {

struct CpuidOptions {
  uint32_t cpu_index = 0;    // this vCPU; its APIC ID
  uint32_t cpu_count = 1;
  // Hide features KVM's instruction emulator cannot run (CX16, XSAVE) — set
  // when /dev/kvm is a software backend (see vmm/host_check.h).
  bool emulator_safe = false;
  // Advertise the TSC-deadline timer (CPUID.1:ECX[24]). KVM's in-kernel LAPIC
  // emulates it, but KVM_GET_SUPPORTED_CPUID leaves the bit clear: the VMM
  // sets it when KVM_CAP_TSC_DEADLINE_TIMER is present. Without it Linux
  // calibrates the LAPIC timer against the PIT, and on a slow or busy host
  // (seen in the nested test host) fails the check, disables the LAPIC timer
  // ("lapic is not functional") and runs on the PIT's periodic tick alone.
  bool tsc_deadline = false;
};

// Fills per-vCPU fields: APIC IDs (leaf 1, 0xB/0x1F, 0x8000001E), logical
// processor counts and topology (1, 4, 0xB, 0x80000008), the hypervisor bit
// and KVM's signature leaf 0x40000000.
std::vector<kvm_cpuid_entry2> build_cpuid(const std::vector<kvm_cpuid_entry2>& supported,
                                          const CpuidOptions& opt);

// Smallest n with (1 << n) >= count.
uint32_t bits_for(uint32_t count);

}  // namespace rz::x86
