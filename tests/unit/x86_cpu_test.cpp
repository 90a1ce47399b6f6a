// CPUID policy, boot CPU state, and host KVM detection.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "memory/guest_memory.h"
#include "vmm/host_check.h"
#include "x86/cpu_setup.h"
#include "x86/cpuid.h"
#include "x86/layout.h"

using namespace rz;
using namespace rz::x86;

namespace {

kvm_cpuid_entry2 leaf(uint32_t fn, uint32_t idx = 0) {
  kvm_cpuid_entry2 e{};
  e.function = fn;
  e.index = idx;
  return e;
}

const kvm_cpuid_entry2* find(const std::vector<kvm_cpuid_entry2>& v, uint32_t fn, uint32_t idx = 0) {
  for (const auto& e : v)
    if (e.function == fn && e.index == idx) return &e;
  return nullptr;
}

std::vector<kvm_cpuid_entry2> host_like() {
  auto l1 = leaf(1);
  l1.ecx = (1u << 13) | (1u << 26) | (1u << 27);  // CX16, XSAVE, OSXSAVE
  l1.ebx = 0xff00ff00;
  auto l4 = leaf(4);
  l4.eax = 0xfc000121;  // a data cache, 64 cores per package
  return {leaf(0), l1, l4, leaf(0xb, 0), leaf(0xb, 1), leaf(0xd, 0), leaf(0x80000008), leaf(0x8000001e)};
}

}  // namespace

TEST(Cpuid, PerVcpuApicIdsAndCounts) {
  CpuidOptions o;
  o.cpu_index = 3;
  o.cpu_count = 4;
  const auto c = build_cpuid(host_like(), o);
  const auto* l1 = find(c, 1);
  ASSERT_NE(l1, nullptr);
  EXPECT_EQ(l1->ebx >> 24, 3u);                // initial APIC ID
  EXPECT_EQ((l1->ebx >> 16) & 0xff, 4u);       // logical processors
  EXPECT_TRUE(l1->ecx & (1u << 31));           // hypervisor present
  EXPECT_TRUE(l1->edx & (1u << 28));           // HTT with more than one CPU
  EXPECT_TRUE(l1->ecx & (1u << 13));           // CX16 kept on hardware KVM
  EXPECT_EQ(find(c, 4)->eax >> 26, 3u);        // cores per package - 1
  EXPECT_EQ(find(c, 4)->eax & 0x3ffffff, 0x121u);
  EXPECT_EQ(find(c, 0xb, 0)->edx, 3u);
  EXPECT_EQ(find(c, 0xb, 1)->ebx, 4u);
  EXPECT_EQ(find(c, 0xb, 1)->eax, 2u);         // APIC ID bits for 4 CPUs
  EXPECT_EQ(find(c, 0x80000008)->ecx & 0xff, 3u);
  EXPECT_EQ(find(c, 0x8000001e)->eax, 3u);
  const auto* hv = find(c, 0x40000000);
  ASSERT_NE(hv, nullptr);
  char sig[13] = {};
  std::memcpy(sig, &hv->ebx, 4);
  std::memcpy(sig + 4, &hv->ecx, 4);
  std::memcpy(sig + 8, &hv->edx, 4);
  EXPECT_STREQ(sig, "KVMKVMKVM");
}

TEST(Cpuid, EmulatorSafeHidesCx16AndXsave) {
  CpuidOptions o;
  o.emulator_safe = true;
  const auto c = build_cpuid(host_like(), o);
  EXPECT_EQ(find(c, 1)->ecx & ((1u << 13) | (1u << 26) | (1u << 27)), 0u);
  EXPECT_FALSE(find(c, 1)->edx & (1u << 28));  // one CPU: no HTT
  EXPECT_EQ(bits_for(1), 0u);
  EXPECT_EQ(bits_for(2), 1u);
  EXPECT_EQ(bits_for(5), 3u);
}

TEST(CpuSetup, GdtEntriesAndLongModeRegisters) {
  EXPECT_EQ(gdt_entry(0xa09b, 0, 0xfffff), 0x00af9b000000ffffULL);  // 64-bit code
  EXPECT_EQ(gdt_entry(0xc093, 0, 0xfffff), 0x00cf93000000ffffULL);  // data
  auto mem = memory::GuestMemory::create_x86(16 * MiB);
  write_boot_structures(mem, CpuMode::Long64);
  EXPECT_EQ(*mem.read_obj<uint64_t>(kPml4Addr), kPdptAddr | 3);
  EXPECT_EQ(*mem.read_obj<uint64_t>(kPdptAddr + 3 * 8), (kPdAddr + 3 * 0x1000) | 3);
  // The last 2 MiB page of the first 4 GiB is identity-mapped.
  EXPECT_EQ(*mem.read_obj<uint64_t>(kPdAddr + 2047 * 8), (2047ULL << 21) | 0x83);
  kvm_sregs s{};
  setup_sregs(s, CpuMode::Long64);
  EXPECT_EQ(s.cr3, kPml4Addr);
  EXPECT_TRUE(s.cr0 & 1);
  EXPECT_TRUE(s.cr0 & (1ULL << 31));
  EXPECT_TRUE(s.cr4 & (1ULL << 5));
  EXPECT_EQ(s.efer & 0x500, 0x500u);
  EXPECT_EQ(s.cs.selector, kBootCs);
  EXPECT_EQ(s.cs.l, 1);
  EXPECT_EQ(s.ds.selector, kBootDs);
  setup_sregs(s, CpuMode::Protected32);
  EXPECT_FALSE(s.cr0 & (1ULL << 31));
  EXPECT_EQ(s.efer & 0x500, 0u);
  EXPECT_EQ(s.cs.db, 1);
  EXPECT_EQ(s.cs.l, 0);
  const kvm_regs r = boot_regs(0x1000200, kZeroPageAddr, 0);
  EXPECT_EQ(r.rip, 0x1000200u);
  EXPECT_EQ(r.rsi, kZeroPageAddr);
  EXPECT_EQ(r.rflags, 2u);
}

TEST(CpuSetup, BootMsrsOnlyThoseKvmLists) {
  const auto m = boot_msrs({0x174, 0x2ff});
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[1].first, 0x2ffu);
  EXPECT_EQ(m[1].second, (1u << 11) | 6u);
}

TEST(HostCheck, DetectsTheKindOfKvm) {
  // A fresh directory each run: a fixed name would keep the kvm_amd entry
  // of an earlier run (another build tree, a --repeat) and break the first check.
  std::string tmpl = ::testing::TempDir() + "/rz-hostcheck-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  const std::string root = tmpl;
  mkdir((root + "/mod").c_str(), 0755);
  std::ofstream(root + "/cpuinfo") << "processor\t: 0\nflags\t\t: fpu sse2 svm\n";
  std::ofstream(root + "/kvm") << "";
  auto h = vmm::detect_host_kvm(root + "/mod", root + "/cpuinfo", root + "/kvm");
  EXPECT_EQ(h.kind, vmm::KvmKind::Unknown);
  EXPECT_TRUE(h.cpu_svm);
  EXPECT_FALSE(h.cpu_vmx);
  mkdir((root + "/mod/kvm_pvm").c_str(), 0755);
  h = vmm::detect_host_kvm(root + "/mod", root + "/cpuinfo", root + "/kvm");
  EXPECT_EQ(h.kind, vmm::KvmKind::Software);
  EXPECT_NE(vmm::emulator_notice(h).find("kvm_pvm"), std::string::npos);
  mkdir((root + "/mod/kvm_amd").c_str(), 0755);
  h = vmm::detect_host_kvm(root + "/mod", root + "/cpuinfo", root + "/kvm");
  EXPECT_EQ(h.kind, vmm::KvmKind::Hardware);
  EXPECT_EQ(h.module, "kvm_amd");
  EXPECT_TRUE(vmm::emulator_notice(h).empty());
  h = vmm::detect_host_kvm(root + "/mod", root + "/cpuinfo", root + "/nonexistent");
  EXPECT_EQ(h.kind, vmm::KvmKind::None);
  std::filesystem::remove_all(root);
}
