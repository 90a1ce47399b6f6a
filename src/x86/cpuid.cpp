#include "x86/cpuid.h"

#include <cstring>

namespace rz::x86 {

namespace {

constexpr uint32_t kEcxCx16 = 1u << 13;
constexpr uint32_t kEcxTscDeadline = 1u << 24;
constexpr uint32_t kEcxXsave = 1u << 26;
constexpr uint32_t kEcxOsxsave = 1u << 27;
constexpr uint32_t kEcxHypervisor = 1u << 31;
constexpr uint32_t kEdxHtt = 1u << 28;

}  // namespace

uint32_t bits_for(uint32_t count) {
  uint32_t n = 0;
  while (n < 32 && (1ull << n) < count) ++n;
  return n;
}

std::vector<kvm_cpuid_entry2> build_cpuid(const std::vector<kvm_cpuid_entry2>& supported,
                                          const CpuidOptions& opt) {
  std::vector<kvm_cpuid_entry2> out = supported;
  const uint32_t apic = opt.cpu_index;
  const uint32_t n = opt.cpu_count ? opt.cpu_count : 1;
  const uint32_t shift = bits_for(n);
  bool have_hv_leaf = false;

  for (auto& e : out) {
    switch (e.function) {
      case 1:
        e.ebx = (e.ebx & 0x0000ffff) | (std::min<uint32_t>(n, 255) << 16) | (apic << 24);
        e.ebx = (e.ebx & ~0xff00u) | (8u << 8);  // CLFLUSH line size: 64 bytes
        e.ecx |= kEcxHypervisor;
        if (opt.tsc_deadline) e.ecx |= kEcxTscDeadline;
        if (opt.emulator_safe) e.ecx &= ~(kEcxCx16 | kEcxXsave | kEcxOsxsave);
        if (n > 1) e.edx |= kEdxHtt; else e.edx &= ~kEdxHtt;
        break;
      case 4:  // deterministic cache parameters: cores per package
        if (e.eax & 0x1f) e.eax = (e.eax & 0x03ffffff) | ((std::min<uint32_t>(n, 64) - 1) << 26);
        break;
      case 0xb:
      case 0x1f:  // extended topology: one thread per core, n cores
        if (e.index == 0) {
          e.eax = 0;
          e.ebx = 1;
          e.ecx = (1u << 8) | 0;
        } else if (e.index == 1) {
          e.eax = shift;
          e.ebx = n;
          e.ecx = (2u << 8) | 1;
        } else {
          e.eax = e.ebx = 0;
          e.ecx = e.index;
        }
        e.edx = apic;
        break;
      case 0xd:
        if (opt.emulator_safe) e.eax = e.ebx = e.ecx = e.edx = 0;
        break;
      case 0x40000000:
        have_hv_leaf = true;
        std::memcpy(&e.ebx, "KVMK", 4);
        std::memcpy(&e.ecx, "VMKV", 4);
        std::memcpy(&e.edx, "M\0\0\0", 4);
        if (e.eax < 0x40000001) e.eax = 0x40000001;
        break;
      case 0x80000008:  // AMD: NC = cores - 1, ApicIdCoreIdSize
        e.ecx = (e.ecx & ~0xf0ffu) | (std::min<uint32_t>(n, 256) - 1) | (shift << 12);
        break;
      case 0x8000001e:  // AMD extended APIC ID: one thread per core
        e.eax = apic;
        e.ebx = apic & 0xff;
        e.ecx = 0;
        break;
      default:
        break;
    }
  }
  if (!have_hv_leaf) {
    kvm_cpuid_entry2 e{};
    e.function = 0x40000000;
    e.eax = 0x40000001;
    std::memcpy(&e.ebx, "KVMK", 4);
    std::memcpy(&e.ecx, "VMKV", 4);
    std::memcpy(&e.edx, "M\0\0\0", 4);
    out.push_back(e);
  }
  return out;
}

}  // namespace rz::x86
