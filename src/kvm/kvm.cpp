#include "kvm/kvm.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace rz::kvm {

KvmError::KvmError(const std::string& ioctl_name, int errnum)
    : Error(errno_message(ioctl_name, errnum)), errnum_(errnum) {}

namespace {

// ioctl() retried on EINTR; throws KvmError naming the request on failure.
template <typename Arg>
int xioctl(int fd, unsigned long req, Arg arg, const char* name) {
  int r;
  do {
    r = ::ioctl(fd, req, arg);
  } while (r < 0 && errno == EINTR);
  if (r < 0) throw KvmError(name, errno);
  return r;
}

#define KVM_IOCTL(fd, req, arg) xioctl((fd), (req), (arg), #req)

// Variable-length KVM structures: a fixed header followed by an array.
//
// <linux/kvm.h> declares these with __DECLARE_FLEX_ARRAY, which in C++ adds
// an empty struct and so changes both sizeof() (and with it the ioctl
// number) and the offset of the array. ringzero therefore spells out the
// kernel's layout itself: the array starts right after the header.
struct CpuidHeader { uint32_t nent, padding; };
struct MsrsHeader { uint32_t nmsrs, pad; };
struct MsrListHeader { uint32_t nmsrs; };
struct IrqRoutingHeader { uint32_t nr, flags; };
static_assert(sizeof(CpuidHeader) == 8 && sizeof(MsrsHeader) == 8 && sizeof(MsrListHeader) == 4 &&
              sizeof(IrqRoutingHeader) == 8);

constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, CpuidHeader);
constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, CpuidHeader);
constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, MsrListHeader);
constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, MsrsHeader);
constexpr unsigned long kSetGsiRouting = _IOW(KVMIO, 0x6a, IrqRoutingHeader);

template <typename Header, typename Entry>
class Flex {
 public:
  explicit Flex(size_t n) : buf_(sizeof(Header) + n * sizeof(Entry)) {}
  Header* header() { return reinterpret_cast<Header*>(buf_.data()); }
  Entry* entries() { return reinterpret_cast<Entry*>(buf_.data() + sizeof(Header)); }
  void* ptr() { return buf_.data(); }

 private:
  std::vector<uint8_t> buf_;
};

struct Cap {
  unsigned id;
  const char* name;
};

constexpr Cap kRequiredCaps[] = {
    {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
    {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
    {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
    {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
    {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
    {KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"},
    {KVM_CAP_IRQFD, "KVM_CAP_IRQFD"},
    {KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING"},
    {KVM_CAP_SIGNAL_MSI, "KVM_CAP_SIGNAL_MSI"},
    {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
    {KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE"},
};

}  // namespace

// ---------------------------------------------------------------- System

System::System(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT)
      throw UsageError(path + " does not exist: this host has no KVM (load kvm_intel or kvm_amd)");
    if (err == EACCES || err == EPERM)
      throw UsageError("no permission to open " + path +
                       ": run as root or add the user to the kvm group");
    throw UsageError(errno_message("cannot open " + path, err));
  }
  fd_.reset(fd);
  const int version = ::ioctl(fd, KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION)
    throw Error("KVM API version " + std::to_string(version) + " is not the expected " +
                std::to_string(KVM_API_VERSION));
}

int System::check_extension(unsigned cap) const {
  const int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
  return r < 0 ? 0 : r;
}

void System::require_capabilities() const {
  for (const Cap& c : kRequiredCaps)
    if (check_extension(c.id) <= 0) throw Error(std::string("KVM lacks required capability ") + c.name);
}

int System::max_vcpus() const {
  int n = check_extension(KVM_CAP_MAX_VCPUS);
  if (n <= 0) n = check_extension(KVM_CAP_NR_VCPUS);
  return n > 0 ? n : 4;
}

int System::vcpu_mmap_size() const {
  return KVM_IOCTL(fd_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
}

std::vector<kvm_cpuid_entry2> System::supported_cpuid() const {
  for (size_t n = 128; n <= 4096; n *= 2) {
    Flex<CpuidHeader, kvm_cpuid_entry2> c(n);
    c.header()->nent = static_cast<uint32_t>(n);
    if (::ioctl(fd_.get(), kGetSupportedCpuid, c.ptr()) == 0) {
      auto* e = c.entries();
      return std::vector<kvm_cpuid_entry2>(e, e + c.header()->nent);
    }
    if (errno != E2BIG) throw KvmError("KVM_GET_SUPPORTED_CPUID", errno);
  }
  throw KvmError("KVM_GET_SUPPORTED_CPUID", E2BIG);
}

std::vector<uint32_t> System::msr_index_list() const {
  MsrListHeader probe{0};
  if (::ioctl(fd_.get(), kGetMsrIndexList, &probe) < 0 && errno != E2BIG)
    throw KvmError("KVM_GET_MSR_INDEX_LIST", errno);
  Flex<MsrListHeader, uint32_t> l(probe.nmsrs);
  l.header()->nmsrs = probe.nmsrs;
  xioctl(fd_.get(), kGetMsrIndexList, l.ptr(), "KVM_GET_MSR_INDEX_LIST");
  auto* p = l.entries();
  return std::vector<uint32_t>(p, p + l.header()->nmsrs);
}

Vm System::create_vm() const {
  const int mmap_size = vcpu_mmap_size();
  const int fd = KVM_IOCTL(fd_.get(), KVM_CREATE_VM, 0UL);
  return Vm(UniqueFd(fd), mmap_size);
}

// -------------------------------------------------------------------- Vm

Vm::Vm(UniqueFd fd, int vcpu_mmap_size) : fd_(std::move(fd)), vcpu_mmap_size_(vcpu_mmap_size) {}

void Vm::set_tss_addr(uint64_t addr) { KVM_IOCTL(fd_.get(), KVM_SET_TSS_ADDR, addr); }

void Vm::set_identity_map_addr(uint64_t addr) {
  KVM_IOCTL(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &addr);
}

void Vm::create_irqchip() { KVM_IOCTL(fd_.get(), KVM_CREATE_IRQCHIP, 0UL); }

void Vm::create_pit2() {
  kvm_pit_config cfg{};
  cfg.flags = KVM_PIT_SPEAKER_DUMMY;
  KVM_IOCTL(fd_.get(), KVM_CREATE_PIT2, &cfg);
}

void Vm::set_user_memory_region(uint32_t slot, uint64_t gpa, uint64_t size, void* host,
                                uint32_t flags) {
  kvm_userspace_memory_region r{};
  r.slot = slot;
  r.flags = flags;
  r.guest_phys_addr = gpa;
  r.memory_size = size;
  r.userspace_addr = reinterpret_cast<uint64_t>(host);
  KVM_IOCTL(fd_.get(), KVM_SET_USER_MEMORY_REGION, &r);
}

void Vm::irq_line(uint32_t gsi, bool level) {
  kvm_irq_level l{};
  l.irq = gsi;
  l.level = level ? 1 : 0;
  KVM_IOCTL(fd_.get(), KVM_IRQ_LINE, &l);
}

void Vm::set_gsi_routing(const std::vector<kvm_irq_routing_entry>& entries) {
  Flex<IrqRoutingHeader, kvm_irq_routing_entry> r(entries.size());
  r.header()->nr = static_cast<uint32_t>(entries.size());
  r.header()->flags = 0;
  std::memcpy(r.entries(), entries.data(), entries.size() * sizeof(kvm_irq_routing_entry));
  xioctl(fd_.get(), kSetGsiRouting, r.ptr(), "KVM_SET_GSI_ROUTING");
}

void Vm::irqfd(int eventfd, uint32_t gsi, bool assign) {
  kvm_irqfd f{};
  f.fd = static_cast<uint32_t>(eventfd);
  f.gsi = gsi;
  f.flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN;
  KVM_IOCTL(fd_.get(), KVM_IRQFD, &f);
}

void Vm::ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio, bool assign) {
  kvm_ioeventfd e{};
  e.fd = eventfd;
  e.addr = addr;
  e.len = len;
  e.flags = (pio ? KVM_IOEVENTFD_FLAG_PIO : 0) | (assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN);
  KVM_IOCTL(fd_.get(), KVM_IOEVENTFD, &e);
}

void Vm::signal_msi(uint64_t addr, uint32_t data) {
  kvm_msi m{};
  m.address_lo = static_cast<uint32_t>(addr);
  m.address_hi = static_cast<uint32_t>(addr >> 32);
  m.data = data;
  KVM_IOCTL(fd_.get(), KVM_SIGNAL_MSI, &m);
}

Vcpu Vm::create_vcpu(uint32_t index) const {
  const int fd = KVM_IOCTL(fd_.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(index));
  return Vcpu(UniqueFd(fd), index, vcpu_mmap_size_);
}

// ------------------------------------------------------------------ Vcpu

Vcpu::Vcpu(UniqueFd fd, uint32_t index, int mmap_size)
    : fd_(std::move(fd)), index_(index), mmap_size_(mmap_size) {
  void* p = ::mmap(nullptr, static_cast<size_t>(mmap_size), PROT_READ | PROT_WRITE, MAP_SHARED,
                   fd_.get(), 0);
  if (p == MAP_FAILED) throw KvmError("mmap(vcpu " + std::to_string(index) + " kvm_run)", errno);
  run_ = static_cast<kvm_run*>(p);
}

Vcpu::Vcpu(Vcpu&& o) noexcept
    : fd_(std::move(o.fd_)), index_(o.index_), mmap_size_(o.mmap_size_), run_(std::exchange(o.run_, nullptr)) {}

Vcpu::~Vcpu() {
  if (run_) ::munmap(run_, static_cast<size_t>(mmap_size_));
}

bool Vcpu::run() {
  if (::ioctl(fd_.get(), KVM_RUN, 0) == 0) return true;
  if (errno == EINTR || errno == EAGAIN) return false;
  throw KvmError("KVM_RUN (vcpu " + std::to_string(index_) + ")", errno);
}

kvm_regs Vcpu::get_regs() const {
  kvm_regs r{};
  KVM_IOCTL(fd_.get(), KVM_GET_REGS, &r);
  return r;
}
void Vcpu::set_regs(const kvm_regs& r) { KVM_IOCTL(fd_.get(), KVM_SET_REGS, &r); }

kvm_sregs Vcpu::get_sregs() const {
  kvm_sregs s{};
  KVM_IOCTL(fd_.get(), KVM_GET_SREGS, &s);
  return s;
}
void Vcpu::set_sregs(const kvm_sregs& s) { KVM_IOCTL(fd_.get(), KVM_SET_SREGS, &s); }

void Vcpu::set_fpu(const kvm_fpu& f) { KVM_IOCTL(fd_.get(), KVM_SET_FPU, &f); }

void Vcpu::set_cpuid(const std::vector<kvm_cpuid_entry2>& entries) {
  Flex<CpuidHeader, kvm_cpuid_entry2> c(entries.size());
  c.header()->nent = static_cast<uint32_t>(entries.size());
  std::memcpy(c.entries(), entries.data(), entries.size() * sizeof(kvm_cpuid_entry2));
  xioctl(fd_.get(), kSetCpuid2, c.ptr(), "KVM_SET_CPUID2");
}

void Vcpu::set_msrs(const std::vector<std::pair<uint32_t, uint64_t>>& msrs) {
  Flex<MsrsHeader, kvm_msr_entry> m(msrs.size());
  m.header()->nmsrs = static_cast<uint32_t>(msrs.size());
  for (size_t i = 0; i < msrs.size(); ++i) {
    m.entries()[i] = kvm_msr_entry{};
    m.entries()[i].index = msrs[i].first;
    m.entries()[i].data = msrs[i].second;
  }
  const int n = xioctl(fd_.get(), kSetMsrs, m.ptr(), "KVM_SET_MSRS");
  if (static_cast<size_t>(n) != msrs.size()) {
    char idx[16];
    std::snprintf(idx, sizeof idx, "%#x", msrs[static_cast<size_t>(n)].first);
    throw Error(std::string("KVM_SET_MSRS: MSR ") + idx + " was refused");
  }
}

kvm_lapic_state Vcpu::get_lapic() const {
  kvm_lapic_state s{};
  KVM_IOCTL(fd_.get(), KVM_GET_LAPIC, &s);
  return s;
}
void Vcpu::set_lapic(const kvm_lapic_state& s) { KVM_IOCTL(fd_.get(), KVM_SET_LAPIC, &s); }

void Vcpu::set_mp_state(uint32_t state) {
  kvm_mp_state s{};
  s.mp_state = state;
  KVM_IOCTL(fd_.get(), KVM_SET_MP_STATE, &s);
}

bool Vcpu::translate(uint64_t gva, uint64_t* gpa) const {
  kvm_translation t{};
  t.linear_address = gva;
  if (::ioctl(fd_.get(), KVM_TRANSLATE, &t) < 0 || !t.valid) return false;
  *gpa = t.physical_address;
  return true;
}

}  // namespace rz::kvm
