// CPUID.1:ECX[24] (TSC-deadline timer) is advertised only when asked for.
#include <gtest/gtest.h>

#include <vector>

#include "x86/cpuid.h"

using rz::x86::build_cpuid;
using rz::x86::CpuidOptions;

namespace {

constexpr uint32_t kTscDeadline = 1u << 24;

std::vector<kvm_cpuid_entry2> leaf1_only(uint32_t ecx) {
  kvm_cpuid_entry2 e{};
  e.function = 1;
  e.ecx = ecx;
  return {e};
}

uint32_t leaf1_ecx(const std::vector<kvm_cpuid_entry2>& c) {
  for (const auto& e : c)
    if (e.function == 1) return e.ecx;
  ADD_FAILURE() << "no leaf 1";
  return 0;
}

TEST(CpuidTscDeadline, SetWhenKvmHasTheCapability) {
  CpuidOptions o;
  o.tsc_deadline = true;
  EXPECT_NE(leaf1_ecx(build_cpuid(leaf1_only(0), o)) & kTscDeadline, 0u);
}

TEST(CpuidTscDeadline, OffByDefault) {
  CpuidOptions o;
  EXPECT_EQ(leaf1_ecx(build_cpuid(leaf1_only(0), o)) & kTscDeadline, 0u);
  // Whatever KVM reported is passed through when the option is off.
  EXPECT_NE(leaf1_ecx(build_cpuid(leaf1_only(kTscDeadline), o)) & kTscDeadline, 0u);
}

TEST(CpuidTscDeadline, OtherLeaf1BitsKept) {
  CpuidOptions o;
  o.tsc_deadline = true;
  const uint32_t ecx = leaf1_ecx(build_cpuid(leaf1_only(1u << 0 | 1u << 9), o));
  EXPECT_EQ(ecx & (1u << 0 | 1u << 9), 1u << 0 | 1u << 9);
  EXPECT_NE(ecx & (1u << 31), 0u);  // hypervisor bit, as before
}

}  // namespace
