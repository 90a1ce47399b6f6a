#include "vmm/host_check.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "kvm/kvm.h"

namespace rz::vmm {

namespace {

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

}  // namespace

const char* kind_name(KvmKind k) {
  switch (k) {
    case KvmKind::None: return "none";
    case KvmKind::Hardware: return "hardware-assisted";
    case KvmKind::Software: return "software (instruction emulator)";
    case KvmKind::Unknown: return "unknown";
  }
  return "?";
}

HostKvm detect_host_kvm(const std::string& sys_module, const std::string& cpuinfo,
                        const std::string& dev_kvm) {
  HostKvm h;
  h.dev_kvm_exists = exists(dev_kvm);
  std::ifstream ci(cpuinfo);
  std::string line;
  while (std::getline(ci, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream ws(line);
    std::string w;
    while (ws >> w) {
      if (w == "vmx") h.cpu_vmx = true;
      if (w == "svm") h.cpu_svm = true;
    }
    break;
  }
  for (const char* m : {"kvm_intel", "kvm_amd"}) {
    if (exists(sys_module + "/" + m)) {
      h.module = m;
      h.kind = KvmKind::Hardware;
    }
  }
  if (h.module.empty()) {
    for (const char* m : {"kvm_pvm"}) {
      if (exists(sys_module + "/" + m)) {
        h.module = m;
        h.kind = KvmKind::Software;
      }
    }
  }
  if (h.module.empty()) h.kind = h.dev_kvm_exists ? KvmKind::Unknown : KvmKind::None;
  if (!h.dev_kvm_exists) h.kind = KvmKind::None;
  return h;
}

std::string emulator_notice(const HostKvm& h) {
  if (h.kind != KvmKind::Software) return {};
  return "ringzero: notice: /dev/kvm is a software KVM backend (" + h.module +
         ", no VT-x/AMD-V): guest code runs in KVM's instruction emulator, about 1000x slower, and "
         "unmodified Linux kernels cannot boot (int3/iret are not emulated); run `ringzero doctor` "
         "for details";
}

int doctor_report(std::string& out) {
  std::ostringstream o;
  const HostKvm h = detect_host_kvm();
  o << "ringzero doctor\n";
  o << "  /dev/kvm:          " << (h.dev_kvm_exists ? "present" : "missing") << "\n";
  o << "  KVM module:        " << (h.module.empty() ? "(none found in /sys/module)" : h.module) << "\n";
  o << "  KVM kind:          " << kind_name(h.kind) << "\n";
  o << "  CPU flags:         vmx=" << (h.cpu_vmx ? "yes" : "no") << " svm=" << (h.cpu_svm ? "yes" : "no")
    << "\n";
  int status = 0;
  try {
    kvm::System sys;
    o << "  API version:       " << KVM_API_VERSION << " (ok)\n";
    struct C { unsigned id; const char* name; };
    const C caps[] = {{KVM_CAP_IRQCHIP, "IRQCHIP"}, {KVM_CAP_PIT2, "PIT2"},
                      {KVM_CAP_IOEVENTFD, "IOEVENTFD"}, {KVM_CAP_IRQFD, "IRQFD"},
                      {KVM_CAP_IRQ_ROUTING, "IRQ_ROUTING"}, {KVM_CAP_SIGNAL_MSI, "SIGNAL_MSI"},
                      {KVM_CAP_IMMEDIATE_EXIT, "IMMEDIATE_EXIT"}, {KVM_CAP_EXT_CPUID, "EXT_CPUID"},
                      {KVM_CAP_MP_STATE, "MP_STATE"}, {KVM_CAP_SYNC_MMU, "SYNC_MMU"},
                      {KVM_CAP_TSC_DEADLINE_TIMER, "TSC_DEADLINE_TIMER"}};
    o << "  capabilities:     ";
    for (const C& c : caps) o << " " << c.name << (sys.check_extension(c.id) > 0 ? "" : "(MISSING)");
    o << "\n  max vCPUs:         " << sys.max_vcpus()
      << " (recommended: " << sys.check_extension(KVM_CAP_NR_VCPUS) << ")\n";
    try {
      sys.require_capabilities();
      o << "  required caps:     all present\n";
    } catch (const Error& e) {
      o << "  required caps:     " << e.what() << "\n";
      status = 1;
    }
  } catch (const Error& e) {
    o << "  open /dev/kvm:     " << e.what() << "\n";
    status = 1;
  }
  o << "  what works:\n";
  switch (h.kind) {
    case KvmKind::Hardware:
      o << "    unmodified Linux and firmware guests at hardware speed\n";
      break;
    case KvmKind::Software:
      o << "    guests run in KVM's instruction emulator (~0.6 us per guest instruction)\n"
           "    small freestanding guests and real-mode code run; interrupts outside real mode\n"
           "    (int/iret), cmpxchg16b and xrstor do not, so unmodified Linux cannot boot here:\n"
           "    use a hardware-assisted host, or the nested test host (tests/nested/run)\n";
      break;
    case KvmKind::Unknown:
      o << "    /dev/kvm exists but its backend is unknown; guests may or may not run\n";
      break;
    case KvmKind::None:
      o << "    nothing: this host has no KVM\n";
      status = 1;
      break;
  }
  out = o.str();
  return status;
}

}  // namespace rz::vmm
