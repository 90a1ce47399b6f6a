#include "virtio/pci_transport.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <optional>
#include <string>

#include "util/error.h"
#include "util/log.h"
#include "virtio/virtio_defs.h"

namespace rz::virtio {
namespace {

constexpr uint32_t kPageSize = 0x1000;
constexpr uint32_t align_up(uint32_t v, uint32_t a) { return (v + a - 1) & ~(a - 1); }

// Transport features this transport does not implement; stripped from what
// a device offers so the driver never sees them.
constexpr uint64_t kUnsupportedTransportFeatures =
    feature_bit(kVirtioFRingPacked) | feature_bit(kVirtioFNotificationData) |
    feature_bit(kVirtioFNotifConfigData) | feature_bit(kVirtioFRingReset) |
    feature_bit(kVirtioFSrIov) | feature_bit(kVirtioFAccessPlatform);

uint64_t get_le(std::span<const uint8_t> in) {
  uint64_t v = 0;
  for (size_t i = 0; i < in.size() && i < 8; ++i) v |= uint64_t{in[i]} << (8 * i);
  return v;
}

template <size_t N>
void put_le(std::array<uint8_t, N>& out, size_t at, uint64_t v, size_t len) {
  for (size_t i = 0; i < len; ++i) out[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

bool is_pow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// struct virtio_pci_cap (spec 4.1.4): vndr, next, len, cfg_type, bar, id,
// padding[2], le32 offset, le32 length, then `extra` (le32) if present.
std::vector<uint8_t> virtio_cap(uint8_t cfg_type, uint8_t bar, uint32_t offset, uint32_t length,
                                std::optional<uint32_t> extra = std::nullopt) {
  std::vector<uint8_t> c(extra ? 20 : 16, 0);
  c[0] = kPciCapVendor;
  c[2] = static_cast<uint8_t>(c.size());
  c[3] = cfg_type;
  c[4] = bar;
  for (int i = 0; i < 4; ++i) {
    c[8 + i] = static_cast<uint8_t>(offset >> (8 * i));
    c[12 + i] = static_cast<uint8_t>(length >> (8 * i));
    if (extra) c[16 + i] = static_cast<uint8_t>(*extra >> (8 * i));
  }
  return c;
}

pci::PciConfigSpace make_config(const VirtioDevice* dev) {
  if (!dev) throw Error("virtio-pci: no device");
  pci::PciHeader h;
  h.vendor_id = kPciVendorId;
  // Non-transitional device: 0x1040 + type, revision >= 1, subsystem id
  // >= 0x40 (spec 4.1.2.1). Linux's virtio_pci_modern accepts exactly this.
  h.device_id = static_cast<uint16_t>(kPciDeviceIdBase + dev->device_type());
  h.revision = 1;
  h.class_code = pci_class_for(dev->device_type());
  h.subsystem_vendor_id = kPciVendorId;
  h.subsystem_id = VirtioPciDevice::kSubsystemId;
  h.interrupt_pin = 1;  // INTA#, the fallback when MSI-X is off
  return pci::PciConfigSpace(h);
}

uint16_t checked_queue_count(const VirtioDevice* dev) {
  const uint16_t n = dev ? dev->num_queues() : 0;
  if (n == 0 || n > VirtioPciDevice::kMaxQueues)
    throw Error("virtio-pci: device must have 1.." + std::to_string(VirtioPciDevice::kMaxQueues) +
                " queues");
  return n;
}

}  // namespace

uint32_t pci_class_for(uint16_t device_type) {
  switch (device_type) {
    case kDeviceIdNet: return 0x020000;      // network: Ethernet
    case kDeviceIdBlock: return 0x010000;    // mass storage: SCSI (QEMU's choice)
    case kDeviceIdConsole:
    case kDeviceIdVsock: return 0x078000;    // communication: other
    case kDeviceIdGpu: return 0x038000;      // display: other
    case kDeviceIdInput: return 0x098000;    // input: other
    case kDeviceIdFs:
    case kDeviceIdPmem: return 0x018000;     // mass storage: other
    default: return 0xff0000;                // unassigned class (rng, balloon, ...)
  }
}

// The Interrupt a device gets at activation. Lives as long as someone holds
// it; the transport outlives the device, which is the only holder that may
// call it (the device drops it on reset()).
class VirtioPciDevice::Irq : public Interrupt {
 public:
  explicit Irq(VirtioPciDevice* t) : t_(t) {}
  void notify_queue(uint16_t queue_index) override { t_->raise_queue(queue_index); }
  void notify_config() override { t_->raise_config(true); }
  void notify_needs_reset(const char* why) override { t_->fail_device(why); }

 private:
  VirtioPciDevice* t_;
};

VirtioPciDevice::VirtioPciDevice(std::unique_ptr<VirtioDevice> device,
                                 const memory::GuestMemory& mem, EventLoop* loop)
    : PciDevice(make_config(device.get())),
      dev_(std::move(device)),
      mem_(mem),
      loop_(loop),
      num_queues_(checked_queue_count(dev_.get())),
      msix_vectors_(static_cast<uint16_t>(std::min<uint32_t>(num_queues_ + 1u, pci::kMsixMaxVectors))),
      device_features_((dev_->device_features() | feature_bit(kVirtioFVersion1)) &
                       ~kUnsupportedTransportFeatures) {
  for (uint16_t i = 0; i < num_queues_; ++i) queues_.emplace_back(dev_->queue_max_size(i));
  queue_vectors_ = std::make_unique<std::atomic<uint16_t>[]>(num_queues_);
  for (uint16_t i = 0; i < num_queues_; ++i) queue_vectors_[i] = kMsiNoVector;
  pending_kicks_.assign(num_queues_, false);

  // BAR 0: fixed structures, then the notify area, the MSI-X table and PBA,
  // each page aligned; the BAR is the next power of two.
  notify_size_ = align_up(num_queues_ * kNotifyOffMultiplier, kPageSize);
  msix_table_offset_ = kNotifyOffset + notify_size_;
  msix_pba_offset_ = msix_table_offset_ + align_up(msix_vectors_ * pci::kMsixEntrySize, kPageSize);
  const uint32_t end = msix_pba_offset_ + align_up((msix_vectors_ + 63) / 64 * 8, kPageSize);
  bar_size_ = std::bit_ceil(uint64_t{end});
  add_capabilities();
  add_msix(msix_vectors_, kBar, msix_table_offset_, msix_pba_offset_);

  irq_ = std::make_shared<Irq>(this);

  if (loop_) {
    for (uint16_t i = 0; i < num_queues_; ++i) {
      UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      if (!fd.valid()) throw Error(errno_message("virtio-pci: eventfd", errno));
      kick_fds_.push_back(std::move(fd));
    }
    for (uint16_t i = 0; i < num_queues_; ++i) {
      const int fd = kick_fds_[i].get();
      loop_->add(fd, EPOLLIN, [this, fd, i](uint32_t) {
        uint64_t count;
        if (::read(fd, &count, sizeof count) != sizeof count) return;  // spurious wake-up
        handle_kick(i);
      });
    }
  }
}

VirtioPciDevice::~VirtioPciDevice() {
  if (loop_)
    for (auto& fd : kick_fds_) loop_->remove(fd.get());
}

void VirtioPciDevice::add_capabilities() {
  with_config([&](pci::PciConfigSpace& c) {
    c.add_bar(kBar, pci::BarType::Mem64, bar_size_, /*prefetchable=*/false);
    // Linux takes the first capability of each type (4.1.4: the driver
    // SHOULD use the first one it can), so order is only cosmetic.
    c.add_capability(virtio_cap(kPciCapCommonCfg, kBar, kCommonCfgOffset, common_cfg::kSize));
    c.add_capability(virtio_cap(kPciCapNotifyCfg, kBar, kNotifyOffset,
                                num_queues_ * kNotifyOffMultiplier, kNotifyOffMultiplier));
    c.add_capability(virtio_cap(kPciCapIsrCfg, kBar, kIsrOffset, 1));
    c.add_capability(virtio_cap(kPciCapDeviceCfg, kBar, kDeviceCfgOffset, kDeviceCfgSize));
    // VIRTIO_PCI_CAP_PCI_CFG (4.1.4.9): bar, offset, length and the data
    // window are writable by the driver.
    const std::vector<uint8_t> body = virtio_cap(kPciCapPciCfg, 0, 0, 0, 0u);
    std::vector<uint8_t> writable(body.size(), 0);
    writable[4] = 0xff;
    std::fill(writable.begin() + 8, writable.end(), 0xff);
    pci_cfg_cap_ = c.add_capability(body, writable);
  });
}

int VirtioPciDevice::queue_eventfd(uint16_t q) const {
  return q < kick_fds_.size() ? kick_fds_[q].get() : -1;
}

void VirtioPciDevice::set_intx_handler(std::function<void(bool)> handler) {
  std::lock_guard lock(irq_mu_);
  intx_ = std::move(handler);
  if (intx_ && intx_level_) intx_(true);
}

uint64_t VirtioPciDevice::negotiated_features() const {
  std::lock_guard lock(regs_mu_);
  return negotiated_;
}

uint16_t VirtioPciDevice::queue_vector(uint16_t q) const {
  return q < num_queues_ ? queue_vectors_[q].load() : kMsiNoVector;
}

// --- BAR 0 ---------------------------------------------------------------------

void VirtioPciDevice::region_read(uint8_t bar, uint64_t offset, std::span<uint8_t> data) {
  const auto in = [&](uint64_t start, uint64_t size) {
    return bar == kBar && offset >= start && offset - start + data.size() <= size;
  };
  if (in(kCommonCfgOffset, kPageSize)) return common_read(offset - kCommonCfgOffset, data);
  std::fill(data.begin(), data.end(), 0);
  if (in(kIsrOffset, kPageSize)) {
    // 4.1.4.5: reading the ISR status clears it (and deasserts INTx).
    if (offset == kIsrOffset && !data.empty()) data[0] = read_clear_isr();
    return;
  }
  if (in(kDeviceCfgOffset, kDeviceCfgSize)) return dev_->read_config(offset - kDeviceCfgOffset, data);
  if (in(kNotifyOffset, notify_size_)) return;  // notification area reads as 0
  std::fill(data.begin(), data.end(), 0xff);
}

void VirtioPciDevice::region_write(uint8_t bar, uint64_t offset, std::span<const uint8_t> data) {
  const auto in = [&](uint64_t start, uint64_t size) {
    return bar == kBar && offset >= start && offset - start + data.size() <= size;
  };
  if (in(kCommonCfgOffset, kPageSize)) return common_write(offset - kCommonCfgOffset, data);
  if (in(kDeviceCfgOffset, kDeviceCfgSize))
    return dev_->write_config(offset - kDeviceCfgOffset, data);
  if (in(kNotifyOffset, notify_size_)) {
    // 4.1.4.4: the driver writes the queue index to the queue's address;
    // without VIRTIO_F_NOTIFICATION_DATA the address alone says which queue.
    // Normally KVM's ioeventfd catches this write; this is the slow path.
    const uint64_t q = (offset - kNotifyOffset) / kNotifyOffMultiplier;
    if (q < num_queues_) kick(static_cast<uint16_t>(q));
  }
}

void VirtioPciDevice::common_read(uint64_t offset, std::span<uint8_t> data) {
  std::array<uint8_t, 0x40> img{};
  {
    std::lock_guard lock(regs_mu_);
    const auto half = [](uint64_t v, uint32_t sel) -> uint32_t {
      return sel == 0 ? static_cast<uint32_t>(v) : sel == 1 ? static_cast<uint32_t>(v >> 32) : 0;
    };
    using namespace common_cfg;
    put_le(img, kDeviceFeatureSelect, device_feature_select_, 4);
    put_le(img, kDeviceFeature, half(device_features_, device_feature_select_), 4);
    put_le(img, kDriverFeatureSelect, driver_feature_select_, 4);
    put_le(img, kDriverFeature, half(driver_features_, driver_feature_select_), 4);
    put_le(img, kConfigMsixVector, config_vector_.load(), 2);
    put_le(img, kNumQueues, num_queues_, 2);
    img[kDeviceStatus] = status_.load();
    img[kConfigGeneration] = config_generation_.load();
    put_le(img, kQueueSelect, queue_select_, 2);
    if (queue_select_ < num_queues_) {
      // A queue that does not exist reads size 0 (4.1.4.3.1); this one does.
      const Queue& q = queues_[queue_select_];
      put_le(img, kQueueSize, q.size(), 2);
      put_le(img, kQueueMsixVector, queue_vectors_[queue_select_].load(), 2);
      put_le(img, kQueueEnable, q.ready() ? 1 : 0, 2);
      put_le(img, kQueueNotifyOff, queue_select_, 2);
      put_le(img, kQueueDesc, q.desc_table(), 8);
      put_le(img, kQueueDriver, q.avail_ring(), 8);
      put_le(img, kQueueDevice, q.used_ring(), 8);
    } else {
      put_le(img, kQueueMsixVector, kMsiNoVector, 2);
    }
  }
  for (size_t i = 0; i < data.size(); ++i) data[i] = offset + i < img.size() ? img[offset + i] : 0;
}

void VirtioPciDevice::common_write(uint64_t offset, std::span<const uint8_t> data) {
  using namespace common_cfg;
  const size_t size = data.size();
  const uint64_t v = get_le(data);
  std::lock_guard lock(regs_mu_);
  const uint8_t status = status_.load();
  // Queue registers of the selected queue, while the driver may still
  // change them: before DRIVER_OK and before it enabled the queue (4.1.4.3.2;
  // queue_enable is one-way without VIRTIO_F_RING_RESET). This also keeps
  // the Queue untouched by vCPU threads once the device runs.
  Queue* q = queue_select_ < num_queues_ ? &queues_[queue_select_] : nullptr;
  Queue* cfg_q = (q && !q->ready() && !(status & kStatusDriverOk)) ? q : nullptr;
  // 64-bit fields: one 8-byte write or either 4-byte half (4.1.3.1).
  const auto set64 = [&](uint32_t field, uint64_t old, auto setter) {
    if (offset == field && size == 8) setter(v);
    else if (offset == field && size == 4) setter((old & ~0xffffffffull) | v);
    else if (offset == field + 4 && size == 4) setter((old & 0xffffffffull) | (v << 32));
  };

  if (offset >= kQueueDesc && offset < kQueueNotifyData) {
    if (!cfg_q) return;
    if (offset < kQueueDriver)
      set64(kQueueDesc, cfg_q->desc_table(), [&](uint64_t a) { cfg_q->set_desc_table(a); });
    else if (offset < kQueueDevice)
      set64(kQueueDriver, cfg_q->avail_ring(), [&](uint64_t a) { cfg_q->set_avail_ring(a); });
    else
      set64(kQueueDevice, cfg_q->used_ring(), [&](uint64_t a) { cfg_q->set_used_ring(a); });
    return;
  }
  const auto field = [&](uint32_t at, size_t width) { return offset == at && size == width; };
  if (field(kDeviceFeatureSelect, 4)) {
    device_feature_select_ = static_cast<uint32_t>(v);
  } else if (field(kDriverFeatureSelect, 4)) {
    driver_feature_select_ = static_cast<uint32_t>(v);
  } else if (field(kDriverFeature, 4)) {
    // Features are fixed once FEATURES_OK is set (3.1.1 step 5).
    if (status & kStatusFeaturesOk) return;
    if (driver_feature_select_ == 0)
      driver_features_ = (driver_features_ & ~0xffffffffull) | v;
    else if (driver_feature_select_ == 1)
      driver_features_ = (driver_features_ & 0xffffffffull) | (v << 32);
  } else if (field(kConfigMsixVector, 2)) {
    // 4.1.5.1.2: a vector the device cannot map reads back as NO_VECTOR.
    config_vector_ = v < msix_vectors_ ? static_cast<uint16_t>(v) : kMsiNoVector;
  } else if (field(kDeviceStatus, 1)) {
    write_status(static_cast<uint8_t>(v));
  } else if (field(kQueueSelect, 2)) {
    queue_select_ = static_cast<uint16_t>(v);
  } else if (field(kQueueMsixVector, 2)) {
    if (q) queue_vectors_[queue_select_] = v < msix_vectors_ ? static_cast<uint16_t>(v) : kMsiNoVector;
  } else if (field(kQueueSize, 2)) {
    // Split queues need a power of 2 no larger than the maximum (2.7);
    // anything else is ignored and the old size stays visible.
    if (cfg_q && is_pow2(v) && v <= cfg_q->max_size()) cfg_q->set_size(static_cast<uint16_t>(v));
  } else if (field(kQueueEnable, 2)) {
    if (!cfg_q || v != 1) return;  // writing 0 needs VIRTIO_F_RING_RESET
    cfg_q->set_ready(true);
    if (!cfg_q->is_valid(mem_)) {
      cfg_q->set_ready(false);
      fail_device("driver enabled a queue with a bad size or ring address");
    }
  }
  // num_queues, config_generation, queue_notify_off, queue_notify_data are
  // read-only; queue_reset is ignored (VIRTIO_F_RING_RESET is not offered).
}

bool VirtioPciDevice::features_acceptable(uint64_t driver) const {
  // 2.2.1: only offered bits; 6.1: a modern device refuses a driver that does
  // not accept VIRTIO_F_VERSION_1.
  return (driver & ~device_features_) == 0 && (driver & feature_bit(kVirtioFVersion1));
}

void VirtioPciDevice::write_status(uint8_t value) {
  if (value == 0) return reset_locked();  // 2.1 / 4.1.4.3.2: writing 0 resets
  // The driver only ever sets bits (2.1.1); DEVICE_NEEDS_RESET is the device's.
  const uint8_t old = status_.load();
  uint8_t add = static_cast<uint8_t>(value & ~old & ~kStatusDeviceNeedsReset);
  if (add & kStatusFeaturesOk) {
    // 3.1.1 step 6: an unacceptable subset leaves FEATURES_OK clear, which
    // the driver sees when it reads the status back.
    if (features_acceptable(driver_features_)) {
      negotiated_ = driver_features_;
    } else {
      add &= static_cast<uint8_t>(~kStatusFeaturesOk);
      log::warn(dev_->name() + ": driver features not acceptable; FEATURES_OK refused");
    }
  }
  const uint8_t next = old | add;
  if ((add & kStatusDriverOk) && (!(next & kStatusFeaturesOk) || (next & kStatusFailed))) {
    add &= static_cast<uint8_t>(~kStatusDriverOk);  // DRIVER_OK needs FEATURES_OK first
  }
  status_.fetch_or(static_cast<uint8_t>(add & ~kStatusDriverOk));
  if (!(add & kStatusDriverOk)) return;

  // DRIVER_OK: the device goes live (3.1.1 step 8). Set the bit first so a
  // failure during activation is reported with a config interrupt.
  status_.fetch_or(kStatusDriverOk);
  for (uint16_t i = 0; i < num_queues_; ++i) {
    if (queues_[i].ready() && !queues_[i].is_valid(mem_)) {
      fail_device("a queue is not valid at DRIVER_OK");
      return;
    }
  }
  bool ok = false;
  run_on_loop([&] {
    std::vector<Queue*> ptrs;
    for (Queue& q : queues_) {
      q.set_features(negotiated_);
      ptrs.push_back(&q);
    }
    ok = dev_->activate(mem_, negotiated_, std::move(ptrs), irq_);
    if (!ok) return;
    activated_ = true;
    activated_flag_ = true;
    // Notifications that came before DRIVER_OK were held back (3.1.1: the
    // device must not use buffers before DRIVER_OK); serve them now.
    for (uint16_t i = 0; i < num_queues_; ++i) {
      if (pending_kicks_[i]) {
        pending_kicks_[i] = false;
        handle_kick(i);
      }
    }
  });
  if (!ok) fail_device("device failed to activate");
}

void VirtioPciDevice::reset_locked() {
  run_on_loop([&] {
    dev_->reset();
    activated_ = false;
    activated_flag_ = false;
    std::fill(pending_kicks_.begin(), pending_kicks_.end(), false);
    for (Queue& q : queues_) q.reset();
  });
  device_feature_select_ = driver_feature_select_ = 0;
  driver_features_ = negotiated_ = 0;
  queue_select_ = 0;
  config_vector_ = kMsiNoVector;
  for (uint16_t i = 0; i < num_queues_; ++i) queue_vectors_[i] = kMsiNoVector;
  {
    std::lock_guard lock(irq_mu_);
    isr_ = 0;
    update_intx_locked();
  }
  // Last: a driver polling device_status for 0 (4.1.4.3.2) sees the reset done.
  status_.store(0);
}

void VirtioPciDevice::reset_device() {
  std::lock_guard lock(regs_mu_);
  reset_locked();
}

// --- PCI config space: INTx disable and the PCI_CFG window ---------------------

void VirtioPciDevice::config_written(pci::PciConfigSpace& config, uint16_t offset, unsigned size) {
  const auto touches = [&](uint16_t at, unsigned len) { return offset < at + len && at < offset + size; };
  if (touches(pci::kCfgCommand, 2)) {
    std::lock_guard lock(irq_mu_);
    intx_disabled_ = config.intx_disabled();
    update_intx_locked();
  }
  if (pci_cfg_cap_ && touches(pci_cfg_cap_ + 4, 16))
    window_access(config, touches(pci_cfg_cap_ + 16, 4));
}

// 4.1.4.9: the driver names a BAR, an offset and a length (1, 2 or 4) and
// then reads or writes pci_cfg_data to access the BAR through config space.
// PciDevice serves config reads from the stored bytes, so the read access is
// made when the driver (re)programs bar/offset/length, which is when the
// window's contents are defined, and its result is left in pci_cfg_data.
// Invalid windows (another BAR, a bad length, unaligned, out of range) are
// ignored. Runs with the config lock held, so it goes straight to the MSI-X
// table or to region_read/region_write, never through PciDevice::bar_*.
void VirtioPciDevice::window_access(pci::PciConfigSpace& config, bool data_written) {
  const uint16_t cap = pci_cfg_cap_;
  const uint32_t bar = config.read(cap + 4, 1);
  const uint32_t off = config.read(cap + 8, 4);
  const uint32_t len = config.read(cap + 12, 4);
  if (bar != kBar || (len != 1 && len != 2 && len != 4) || off % len || off + uint64_t{len} > bar_size_)
    return;
  std::array<uint8_t, 4> buf{};
  const std::span<uint8_t> bytes(buf.data(), len);
  const auto& table = msix();
  const bool in_table = off >= msix_table_offset_ && off < msix_table_offset_ + table->table_bytes();
  const bool in_pba = off >= msix_pba_offset_ && off < msix_pba_offset_ + table->pba_bytes();
  if (data_written) {
    const uint32_t v = config.read(cap + 16, 4);
    for (uint32_t i = 0; i < len; ++i) buf[i] = static_cast<uint8_t>(v >> (8 * i));
    if (in_table) table->table_write(off - msix_table_offset_, bytes);
    else if (!in_pba) region_write(kBar, off, bytes);
  } else {
    if (in_table) table->table_read(off - msix_table_offset_, bytes);
    else if (in_pba) table->pba_read(off - msix_pba_offset_, bytes);
    else region_read(kBar, off, bytes);
    config.poke(cap + 16, 4, static_cast<uint32_t>(get_le(buf)));
  }
}

// --- Device thread -------------------------------------------------------------

void VirtioPciDevice::run_on_loop(const std::function<void()>& fn) {
  if (!loop_ || loop_->on_loop_thread()) return fn();
  // Post and wait. The task is claimed exactly once: if the loop does not
  // answer for a long time (it was stopped too early: a bug in the caller's
  // shutdown order), the work runs here instead, and the late task is a no-op.
  struct Task {
    std::mutex mu;
    std::condition_variable cv;
    bool claimed = false;
    bool done = false;
  };
  auto task = std::make_shared<Task>();
  loop_->post([task, &fn] {
    {
      std::lock_guard lock(task->mu);
      if (task->claimed) return;
      task->claimed = true;
    }
    fn();
    std::lock_guard lock(task->mu);
    task->done = true;
    task->cv.notify_all();
  });
  std::unique_lock lock(task->mu);
  if (task->cv.wait_for(lock, std::chrono::seconds(30), [&] { return task->done; })) return;
  if (task->claimed) {  // running, just slow: keep waiting
    task->cv.wait(lock, [&] { return task->done; });
    return;
  }
  task->claimed = true;
  lock.unlock();
  log::error(dev_->name() + ": event loop not running; device call made on the caller's thread");
  fn();
}

void VirtioPciDevice::kick(uint16_t q) {
  if (q >= num_queues_) return;
  if (!loop_) return handle_kick(q);
  // The same eventfd KVM signals, so both paths meet on the loop thread.
  const uint64_t one = 1;
  ssize_t r = ::write(kick_fds_[q].get(), &one, sizeof one);
  (void)r;
}

void VirtioPciDevice::handle_kick(uint16_t q) {
  if (q >= num_queues_) return;
  if (!activated_) {
    pending_kicks_[q] = true;
    return;
  }
  Queue& queue = queues_[q];
  if (!queue.ready() || queue.broken()) return;
  dev_->process_queue(q);
  if (queue.broken()) fail_device(queue.error_message());
}

void VirtioPciDevice::fail_device(const char* why) {
  const uint8_t old = status_.fetch_or(kStatusDeviceNeedsReset);
  if (old & kStatusDeviceNeedsReset) return;
  log::warn(dev_->name() + ": " + why + "; device needs reset");
  // 2.1.2: with DRIVER_OK set, tell the driver by a config change interrupt.
  if (old & kStatusDriverOk) raise_config(false);
}

// --- Interrupts -----------------------------------------------------------------

void VirtioPciDevice::raise_queue(uint16_t q) {
  if (q >= num_queues_) return;
  const auto& table = msix();
  if (table->enabled()) {
    // 4.1.5.1.2: with MSI-X on, the queue's vector; NO_VECTOR means none.
    const uint16_t v = queue_vectors_[q].load();
    if (v != kMsiNoVector) table->notify(v);
    return;
  }
  assert_isr(kIsrQueue);
}

void VirtioPciDevice::raise_config(bool bump_generation) {
  // 4.1.4.3.1: config_generation changes whenever the device's config does.
  if (bump_generation) config_generation_.fetch_add(1);
  const auto& table = msix();
  if (table->enabled()) {
    const uint16_t v = config_vector_.load();
    if (v != kMsiNoVector) table->notify(v);
    return;
  }
  assert_isr(kIsrConfig);
}

void VirtioPciDevice::assert_isr(uint8_t bits) {
  std::lock_guard lock(irq_mu_);
  isr_ |= bits;
  update_intx_locked();
}

uint8_t VirtioPciDevice::read_clear_isr() {
  std::lock_guard lock(irq_mu_);
  const uint8_t v = isr_;
  isr_ = 0;
  update_intx_locked();
  return v;
}

void VirtioPciDevice::update_intx_locked() {
  // Level-triggered INTx follows the ISR, unless the command register's
  // Interrupt Disable bit is set (PCI 3.0, 6.2.2).
  const bool level = isr_ != 0 && !intx_disabled_;
  if (level == intx_level_) return;
  intx_level_ = level;
  if (intx_) intx_(level);
}

}  // namespace rz::virtio
