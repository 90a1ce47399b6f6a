// What kind of KVM this host has, and what that means for guests.
#pragma once

#include <string>

namespace rz::vmm {

enum class KvmKind {
  None,       // no /dev/kvm
  Hardware,   // kvm_intel or kvm_amd: VT-x / AMD-V
  Software,   // a software backend (e.g. kvm_pvm): guests run in KVM's emulator
  Unknown,    // /dev/kvm exists but no known vendor module is visible
};

struct HostKvm {
  KvmKind kind = KvmKind::None;
  std::string module;        // kvm_intel, kvm_amd, kvm_pvm, ...
  bool cpu_vmx = false;      // /proc/cpuinfo flags
  bool cpu_svm = false;
  bool dev_kvm_exists = false;
};

// Reads /sys/module and /proc/cpuinfo (roots overridable for tests).
HostKvm detect_host_kvm(const std::string& sys_module = "/sys/module",
                        const std::string& cpuinfo = "/proc/cpuinfo",
                        const std::string& dev_kvm = "/dev/kvm");

const char* kind_name(KvmKind k);

// The one-line notice printed when guests will run in KVM's emulator, or
// empty when there is nothing to say.
std::string emulator_notice(const HostKvm& h);

// `ringzero doctor`: a full report; opens /dev/kvm to list capabilities.
// Returns the exit status (0 when ringzero can run guests here).
int doctor_report(std::string& out);

}  // namespace rz::vmm
