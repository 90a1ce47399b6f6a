// Unit tests for the virtio-pci transport (src/virtio/pci_transport.h),
// without KVM: a fake VirtioDevice behind VirtioPciDevice, driven the way a
// guest driver would, through PCI config space and BAR 0 accesses.
#include <gtest/gtest.h>

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "memory/guest_memory.h"
#include "pci/msix.h"
#include "util/error.h"
#include "util/event_loop.h"
#include "virtio/pci_transport.h"
#include "virtio/rng.h"
#include "vmm/pci_platform.h"
#include "devices/bus.h"
#include "virtio/virtio_defs.h"
#include "virtio_test_driver.h"

namespace rz::virtio {
namespace {

using memory::GuestMemory;
namespace cc = common_cfg;

constexpr uint64_t kOffered = feature_bit(kVirtioFVersion1) | feature_bit(kVirtioFEventIdx) |
                              feature_bit(kVirtioFIndirectDesc) | feature_bit(0) |
                              feature_bit(kVirtioFRingPacked) /* stripped by the transport */;

// What the fake device saw; shared with the test after the device moved
// into the transport.
struct FakeState {
  std::mutex mu;
  int activations = 0;
  int resets = 0;
  uint64_t features = 0;
  std::vector<Queue*> queues;
  std::shared_ptr<Interrupt> irq;
  const GuestMemory* mem = nullptr;
  std::vector<uint16_t> processed;
  std::vector<std::thread::id> threads;  // thread of every device call
  bool activate_result = true;
  bool break_queue = false;  // process_queue marks nothing, but simulates a guest error
  std::vector<uint8_t> config = {0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88};
};

class FakeDevice : public VirtioDevice {
 public:
  explicit FakeDevice(std::shared_ptr<FakeState> s) : s_(std::move(s)) {}
  uint16_t device_type() const override { return kDeviceIdBlock; }
  std::string name() const override { return "fake"; }
  uint64_t device_features() const override { return kOffered; }
  uint16_t num_queues() const override { return 2; }
  uint16_t queue_max_size(uint16_t q) const override { return q == 0 ? 64 : 128; }
  void read_config(uint64_t offset, std::span<uint8_t> data) override {
    std::lock_guard lock(s_->mu);
    for (size_t i = 0; i < data.size(); ++i)
      data[i] = offset + i < s_->config.size() ? s_->config[offset + i] : 0;
  }
  void write_config(uint64_t offset, std::span<const uint8_t> data) override {
    std::lock_guard lock(s_->mu);
    for (size_t i = 0; i < data.size(); ++i)
      if (offset + i < s_->config.size()) s_->config[offset + i] = data[i];
  }
  bool activate(const GuestMemory& mem, uint64_t features, std::vector<Queue*> queues,
                std::shared_ptr<Interrupt> irq) override {
    std::lock_guard lock(s_->mu);
    s_->threads.push_back(std::this_thread::get_id());
    ++s_->activations;
    s_->features = features;
    s_->queues = queues;
    s_->irq = irq;
    s_->mem = &mem;
    return s_->activate_result;
  }
  // Completes every chain with its writable length and interrupts.
  void process_queue(uint16_t index) override {
    std::shared_ptr<Interrupt> irq;
    {
      std::lock_guard lock(s_->mu);
      s_->threads.push_back(std::this_thread::get_id());
      s_->processed.push_back(index);
      Queue& q = *s_->queues.at(index);
      if (s_->break_queue) {
        // A guest that publishes an avail index far ahead breaks the queue.
        s_->mem->write_obj<uint16_t>(q.avail_ring() + 2, static_cast<uint16_t>(q.next_avail() + q.size() + 5));
      }
      while (auto c = q.pop(*s_->mem)) q.add_used(*s_->mem, c->head(), c->writable_len());
      irq = s_->irq;
    }
    irq->notify_queue(index);
  }
  void reset() override {
    std::lock_guard lock(s_->mu);
    s_->threads.push_back(std::this_thread::get_id());
    ++s_->resets;
    s_->queues.clear();
    s_->irq.reset();
  }

 private:
  std::shared_ptr<FakeState> s_;
};

class VirtioPciTest : public ::testing::Test {
 protected:
  void SetUp() override { make(nullptr); }

  void make(EventLoop* loop) {
    dev.reset();
    state = std::make_shared<FakeState>();
    dev = std::make_unique<VirtioPciDevice>(std::make_unique<FakeDevice>(state), mem, loop);
    dev->set_intx_handler([this](bool level) {
      std::lock_guard lock(intx_mu);
      intx_events.push_back(level);
    });
    dev->msix()->set_deliver([this](uint16_t v, const pci::MsiMessage&) {
      std::lock_guard lock(intx_mu);
      msi_delivered.push_back(v);
    });
  }

  // BAR 0 accesses.
  uint64_t rd(uint64_t off, size_t size) {
    uint8_t buf[8] = {};
    dev->bar_read(0, off, std::span<uint8_t>(buf, size));
    uint64_t v = 0;
    std::memcpy(&v, buf, size);
    return v;
  }
  void wr(uint64_t off, size_t size, uint64_t v) {
    uint8_t buf[8];
    std::memcpy(buf, &v, 8);
    dev->bar_write(0, off, std::span<const uint8_t>(buf, size));
  }
  uint64_t common(uint32_t field, size_t size) { return rd(VirtioPciDevice::kCommonCfgOffset + field, size); }
  void set_common(uint32_t field, size_t size, uint64_t v) { wr(VirtioPciDevice::kCommonCfgOffset + field, size, v); }
  uint8_t status() { return static_cast<uint8_t>(common(cc::kDeviceStatus, 1)); }
  void set_status(uint8_t s) { set_common(cc::kDeviceStatus, 1, s); }

  void write_driver_features(uint64_t f) {
    set_common(cc::kDriverFeatureSelect, 4, 0);
    set_common(cc::kDriverFeature, 4, f & 0xffffffff);
    set_common(cc::kDriverFeatureSelect, 4, 1);
    set_common(cc::kDriverFeature, 4, f >> 32);
  }
  void negotiate(uint64_t f) {
    set_status(kStatusAcknowledge);
    set_status(kStatusAcknowledge | kStatusDriver);
    write_driver_features(f);
    set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  }
  // Programs queue `q` from a driver-side layout and enables it.
  void setup_queue(uint16_t q, const test::QueueDriver& d) {
    set_common(cc::kQueueSelect, 2, q);
    set_common(cc::kQueueSize, 2, d.size());
    set_common(cc::kQueueDesc, 4, d.desc_gpa() & 0xffffffff);
    set_common(cc::kQueueDesc + 4, 4, d.desc_gpa() >> 32);
    set_common(cc::kQueueDriver, 8, d.avail_gpa());
    set_common(cc::kQueueDevice, 8, d.used_gpa());
    set_common(cc::kQueueEnable, 2, 1);
  }
  void driver_ok() {
    set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  }
  // The whole bring-up of queue 0.
  void bring_up() {
    negotiate(feature_bit(kVirtioFVersion1) | feature_bit(kVirtioFEventIdx));
    setup_queue(0, drv);
    driver_ok();
  }
  void notify(uint16_t q) { wr(VirtioPciDevice::notify_offset(q), 2, q); }
  uint8_t isr() { return static_cast<uint8_t>(rd(VirtioPciDevice::kIsrOffset, 1)); }
  std::vector<bool> intx() {
    std::lock_guard lock(intx_mu);
    return intx_events;
  }
  std::vector<uint16_t> msis() {
    std::lock_guard lock(intx_mu);
    return msi_delivered;
  }
  uint8_t msix_cap() { return *dev->with_config([](auto& c) { return c.find_capability(pci::kCapIdMsix); }); }
  void enable_msix() {
    const uint8_t cap = msix_cap();
    dev->config_write(cap + pci::kMsixCapControl, 2, pci::kMsixControlEnable);
    // Unmask every vector with a distinct message.
    for (uint16_t v = 0; v < dev->msix()->vectors(); ++v) {
      wr(table_offset() + 16 * v + 0, 4, 0xfee00000);
      wr(table_offset() + 16 * v + 8, 4, 0x40 + v);
      wr(table_offset() + 16 * v + 12, 4, 0);
    }
  }
  uint32_t table_offset() {
    const uint8_t cap = msix_cap();
    return dev->config_read(cap + 4, 4) & ~7u;
  }

  GuestMemory mem = GuestMemory::create({{0, 1 << 20}});
  test::QueueDriver drv{mem, 16, 0x1000, 0x10000, 0x40000};
  std::shared_ptr<FakeState> state;
  std::unique_ptr<VirtioPciDevice> dev;
  std::mutex intx_mu;
  std::vector<bool> intx_events;
  std::vector<uint16_t> msi_delivered;
};

// --- Identity and capabilities ----------------------------------------------------

TEST_F(VirtioPciTest, PciIdentity) {
  EXPECT_EQ(dev->config_read(pci::kCfgVendorId, 2), 0x1af4u);
  EXPECT_EQ(dev->config_read(pci::kCfgDeviceId, 2), 0x1040u + kDeviceIdBlock);
  EXPECT_EQ(dev->config_read(pci::kCfgRevision, 1), 1u);
  EXPECT_EQ(dev->config_read(pci::kCfgRevision, 4) >> 8, 0x010000u);
  EXPECT_EQ(dev->config_read(pci::kCfgSubsystemVendorId, 2), 0x1af4u);
  EXPECT_GE(dev->config_read(pci::kCfgSubsystemId, 2), 0x40u);
  EXPECT_EQ(dev->config_read(pci::kCfgInterruptPin, 1), 1u);
  EXPECT_EQ(pci_class_for(kDeviceIdNet), 0x020000u);
  EXPECT_EQ(pci_class_for(kDeviceIdEntropy), 0xff0000u);

  // One 64-bit, non-prefetchable memory BAR, sized like any BAR.
  auto bars = dev->bars();
  ASSERT_EQ(bars.size(), 1u);
  EXPECT_EQ(bars[0].index, 0);
  EXPECT_EQ(bars[0].type, pci::BarType::Mem64);
  EXPECT_FALSE(bars[0].prefetchable);
  EXPECT_EQ(bars[0].size, dev->bar_size());
  dev->config_write(pci::kCfgBar0, 4, 0xffffffff);
  dev->config_write(pci::kCfgBar0 + 4, 4, 0xffffffff);
  const uint32_t lo = dev->config_read(pci::kCfgBar0, 4);
  EXPECT_EQ(lo & 0xf, 0x4u);  // memory, 64-bit, not prefetchable
  EXPECT_EQ(~(lo & ~0xfu) + 1, dev->bar_size());
}

TEST_F(VirtioPciTest, CapabilityListHasAllVirtioCapsAndMsix) {
  ASSERT_TRUE(dev->config_read(pci::kCfgStatus, 2) & pci::kStatusCapabilityList);
  std::map<uint8_t, uint8_t> virtio_caps;  // cfg_type -> offset
  bool msix = false;
  uint8_t ptr = dev->config_read(pci::kCfgCapabilityPtr, 1);
  for (int n = 0; ptr && n < 48; ++n) {
    const uint8_t id = dev->config_read(ptr, 1);
    if (id == kPciCapVendor) {
      const uint8_t type = dev->config_read(ptr + 3, 1);
      EXPECT_FALSE(virtio_caps.count(type)) << "duplicate cfg_type " << int(type);
      virtio_caps[type] = ptr;
      EXPECT_GE(dev->config_read(ptr + 2, 1), 16u);  // cap_len
    }
    if (id == pci::kCapIdMsix) msix = true;
    ptr = dev->config_read(ptr + 1, 1);
  }
  EXPECT_TRUE(msix);
  ASSERT_EQ(virtio_caps.size(), 5u);
  auto field = [&](uint8_t type, uint8_t at, unsigned size) {
    return dev->config_read(virtio_caps.at(type) + at, size);
  };
  for (uint8_t t = 1; t <= 4; ++t) EXPECT_EQ(field(t, 4, 1), 0u) << "bar of cfg_type " << int(t);
  EXPECT_EQ(field(kPciCapCommonCfg, 8, 4), VirtioPciDevice::kCommonCfgOffset);
  EXPECT_EQ(field(kPciCapCommonCfg, 12, 4), cc::kSize);
  EXPECT_EQ(field(kPciCapIsrCfg, 8, 4), VirtioPciDevice::kIsrOffset);
  EXPECT_EQ(field(kPciCapDeviceCfg, 8, 4), VirtioPciDevice::kDeviceCfgOffset);
  EXPECT_EQ(field(kPciCapNotifyCfg, 8, 4), VirtioPciDevice::kNotifyOffset);
  EXPECT_EQ(field(kPciCapNotifyCfg, 12, 4), 2u * 4);  // one slot per queue
  EXPECT_EQ(field(kPciCapNotifyCfg, 2, 1), 20u);
  EXPECT_EQ(field(kPciCapNotifyCfg, 16, 4), 4u);  // notify_off_multiplier
  EXPECT_EQ(field(kPciCapPciCfg, 2, 1), 20u);
  EXPECT_EQ(virtio_caps.at(kPciCapPciCfg), dev->pci_cfg_cap_offset());
  // Every structure lies inside the BAR, clear of the MSI-X table.
  for (uint8_t t = 1; t <= 4; ++t)
    EXPECT_LE(field(t, 8, 4) + uint64_t{field(t, 12, 4)}, table_offset());
  EXPECT_EQ(dev->msix()->vectors(), 3);  // 2 queues + config
  EXPECT_LE(table_offset() + 3 * 16u, dev->bar_size());
}

// --- Features ---------------------------------------------------------------------

TEST_F(VirtioPciTest, DeviceFeaturesThroughSelect) {
  set_common(cc::kDeviceFeatureSelect, 4, 0);
  const uint64_t lo = common(cc::kDeviceFeature, 4);
  set_common(cc::kDeviceFeatureSelect, 4, 1);
  const uint64_t hi = common(cc::kDeviceFeature, 4);
  set_common(cc::kDeviceFeatureSelect, 4, 2);
  EXPECT_EQ(common(cc::kDeviceFeature, 4), 0u);
  EXPECT_EQ(lo | hi << 32, kOffered & ~feature_bit(kVirtioFRingPacked));
  EXPECT_EQ(dev->offered_features(), lo | hi << 32);
  EXPECT_EQ(common(cc::kNumQueues, 2), 2u);
}

TEST_F(VirtioPciTest, FeaturesOkAcceptsOfferedSubset) {
  const uint64_t f = feature_bit(kVirtioFVersion1) | feature_bit(kVirtioFIndirectDesc) | 1;
  negotiate(f);
  EXPECT_TRUE(status() & kStatusFeaturesOk);
  EXPECT_EQ(dev->negotiated_features(), f);
  set_common(cc::kDriverFeatureSelect, 4, 0);
  EXPECT_EQ(common(cc::kDriverFeature, 4), f & 0xffffffff);
  // Once FEATURES_OK is set the driver's features are frozen.
  set_common(cc::kDriverFeature, 4, 0);
  EXPECT_EQ(common(cc::kDriverFeature, 4), f & 0xffffffff);
}

TEST_F(VirtioPciTest, FeaturesOkRefusedForUnofferedBit) {
  negotiate(feature_bit(kVirtioFVersion1) | feature_bit(5));
  EXPECT_FALSE(status() & kStatusFeaturesOk);
  EXPECT_EQ(status(), kStatusAcknowledge | kStatusDriver);
  // Packed rings are stripped from the offer, so accepting them fails too.
  set_status(0);
  negotiate(feature_bit(kVirtioFVersion1) | feature_bit(kVirtioFRingPacked));
  EXPECT_FALSE(status() & kStatusFeaturesOk);
}

TEST_F(VirtioPciTest, FeaturesOkRefusedWithoutVersion1) {
  negotiate(feature_bit(kVirtioFEventIdx));
  EXPECT_FALSE(status() & kStatusFeaturesOk);
  // DRIVER_OK without FEATURES_OK does not activate the device.
  driver_ok();
  EXPECT_FALSE(status() & kStatusDriverOk);
  EXPECT_EQ(state->activations, 0);
}

// --- Status and reset ------------------------------------------------------------

TEST_F(VirtioPciTest, DriverOkActivatesWithNegotiatedFeatures) {
  bring_up();
  EXPECT_EQ(status(), kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  EXPECT_EQ(state->activations, 1);
  EXPECT_EQ(state->features, feature_bit(kVirtioFVersion1) | feature_bit(kVirtioFEventIdx));
  ASSERT_EQ(state->queues.size(), 2u);
  EXPECT_TRUE(state->queues[0]->ready());
  EXPECT_TRUE(state->queues[0]->event_idx());   // Queue::set_features applied
  EXPECT_FALSE(state->queues[0]->indirect_desc());
  EXPECT_FALSE(state->queues[1]->ready());
  EXPECT_TRUE(state->queues[1]->event_idx());
  EXPECT_TRUE(dev->activated());
  // The driver cannot clear bits short of a reset.
  set_status(kStatusAcknowledge);
  EXPECT_TRUE(status() & kStatusDriverOk);
  EXPECT_EQ(state->activations, 1);
}

TEST_F(VirtioPciTest, WritingZeroResets) {
  bring_up();
  set_common(cc::kConfigMsixVector, 2, 0);
  set_common(cc::kQueueSelect, 2, 0);
  set_common(cc::kQueueMsixVector, 2, 1);
  set_status(0);
  EXPECT_EQ(status(), 0);
  EXPECT_EQ(state->resets, 1);
  EXPECT_FALSE(dev->activated());
  EXPECT_EQ(dev->negotiated_features(), 0u);
  EXPECT_EQ(common(cc::kConfigMsixVector, 2), kMsiNoVector);
  set_common(cc::kQueueSelect, 2, 0);
  EXPECT_EQ(common(cc::kQueueMsixVector, 2), kMsiNoVector);
  EXPECT_EQ(common(cc::kQueueEnable, 2), 0u);
  EXPECT_EQ(common(cc::kQueueSize, 2), 64u);
  EXPECT_EQ(common(cc::kQueueDesc, 8), 0u);
  set_common(cc::kDriverFeatureSelect, 4, 0);
  EXPECT_EQ(common(cc::kDriverFeature, 4), 0u);
  // And the device comes up again.
  test::QueueDriver d2(mem, 8, 0x8000, 0x50000, 0x1000);
  negotiate(feature_bit(kVirtioFVersion1));
  setup_queue(0, d2);
  driver_ok();
  EXPECT_EQ(state->activations, 2);
  EXPECT_FALSE(state->queues[0]->event_idx());
}

TEST_F(VirtioPciTest, ActivationFailureSetsNeedsReset) {
  state->activate_result = false;
  bring_up();
  EXPECT_TRUE(status() & kStatusDeviceNeedsReset);
  EXPECT_EQ(isr() & kIsrConfig, kIsrConfig);  // config change interrupt (INTx here)
  set_status(0);
  EXPECT_EQ(status(), 0);
}

// --- Queue configuration --------------------------------------------------------

TEST_F(VirtioPciTest, QueueRegisters) {
  set_common(cc::kQueueSelect, 2, 1);
  EXPECT_EQ(common(cc::kQueueSize, 2), 128u);
  EXPECT_EQ(common(cc::kQueueNotifyOff, 2), 1u);
  set_common(cc::kQueueSize, 2, 100);  // not a power of 2
  EXPECT_EQ(common(cc::kQueueSize, 2), 128u);
  set_common(cc::kQueueSize, 2, 256);  // above the maximum
  EXPECT_EQ(common(cc::kQueueSize, 2), 128u);
  set_common(cc::kQueueSize, 2, 0);
  EXPECT_EQ(common(cc::kQueueSize, 2), 128u);
  set_common(cc::kQueueSize, 2, 32);
  EXPECT_EQ(common(cc::kQueueSize, 2), 32u);
  // 64-bit addresses: as two halves, or in one access.
  set_common(cc::kQueueDriver, 4, 0x2000);
  set_common(cc::kQueueDriver + 4, 4, 0x1);
  EXPECT_EQ(common(cc::kQueueDriver, 8), 0x100002000u);
  EXPECT_EQ(common(cc::kQueueDriver + 4, 4), 0x1u);
  set_common(cc::kQueueDevice, 8, 0x3000);
  EXPECT_EQ(common(cc::kQueueDevice, 8), 0x3000u);
  EXPECT_EQ(common(cc::kQueueNotifyData, 2), 0u);
  // A queue that does not exist has size 0 and ignores writes.
  set_common(cc::kQueueSelect, 2, 2);
  EXPECT_EQ(common(cc::kQueueSize, 2), 0u);
  set_common(cc::kQueueSize, 2, 16);
  EXPECT_EQ(common(cc::kQueueSize, 2), 0u);
  set_common(cc::kQueueMsixVector, 2, 0);
  EXPECT_EQ(common(cc::kQueueMsixVector, 2), kMsiNoVector);
  // num_queues is read-only.
  set_common(cc::kNumQueues, 2, 9);
  EXPECT_EQ(common(cc::kNumQueues, 2), 2u);
}

TEST_F(VirtioPciTest, EnablingAnInvalidQueueIsRefused) {
  negotiate(feature_bit(kVirtioFVersion1));
  set_common(cc::kQueueSelect, 2, 0);
  set_common(cc::kQueueDesc, 8, 0x1008);  // not 16-aligned
  set_common(cc::kQueueDriver, 8, 0x2000);
  set_common(cc::kQueueDevice, 8, 0x3000);
  set_common(cc::kQueueEnable, 2, 1);
  EXPECT_EQ(common(cc::kQueueEnable, 2), 0u);
  EXPECT_TRUE(status() & kStatusDeviceNeedsReset);
  EXPECT_EQ(isr(), 0);  // no config interrupt before DRIVER_OK
  set_common(cc::kQueueDevice, 8, 1ull << 40);  // outside guest memory
  set_common(cc::kQueueDesc, 8, 0x1000);
  set_common(cc::kQueueEnable, 2, 1);
  EXPECT_EQ(common(cc::kQueueEnable, 2), 0u);
}

TEST_F(VirtioPciTest, EnabledQueueIsFrozen) {
  negotiate(feature_bit(kVirtioFVersion1));
  setup_queue(0, drv);
  EXPECT_EQ(common(cc::kQueueEnable, 2), 1u);
  set_common(cc::kQueueSize, 2, 8);
  set_common(cc::kQueueDesc, 8, 0x9000);
  set_common(cc::kQueueEnable, 2, 0);  // needs VIRTIO_F_RING_RESET: ignored
  EXPECT_EQ(common(cc::kQueueSize, 2), 16u);
  EXPECT_EQ(common(cc::kQueueDesc, 8), drv.desc_gpa());
  EXPECT_EQ(common(cc::kQueueEnable, 2), 1u);
}

// --- Notifications --------------------------------------------------------------

TEST_F(VirtioPciTest, NotifyRunsProcessQueue) {
  bring_up();
  const uint64_t buf = drv.alloc(64);
  const uint16_t head = drv.add_chain({{buf, 64, true}});
  notify(0);
  ASSERT_EQ(state->processed, std::vector<uint16_t>{0});
  auto used = drv.pop_used();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->id, head);
  EXPECT_EQ(used->len, 64u);
  // Out-of-range notify slots and queues are ignored.
  wr(VirtioPciDevice::notify_offset(7), 2, 7);
  notify(1);  // queue 1 not enabled
  EXPECT_EQ(state->processed.size(), 1u);
}

TEST_F(VirtioPciTest, NotifyBeforeDriverOkIsHeldUntilActivation) {
  negotiate(feature_bit(kVirtioFVersion1));
  setup_queue(0, drv);
  const uint64_t buf = drv.alloc(8);
  drv.add_chain({{buf, 8, true}});
  notify(0);
  EXPECT_TRUE(state->processed.empty());
  EXPECT_EQ(drv.used_idx(), 0);
  driver_ok();
  EXPECT_EQ(state->processed, std::vector<uint16_t>{0});
  EXPECT_EQ(drv.used_idx(), 1);
}

TEST_F(VirtioPciTest, DeviceReportedBreakageSetsNeedsReset) {
  // A device that finds a queue broken on its own thread reports it through
  // its Interrupt: same outcome as a queue breaking during a notification.
  bring_up();
  ASSERT_TRUE(state->irq);
  EXPECT_FALSE(status() & kStatusDeviceNeedsReset);
  state->irq->notify_needs_reset("test: receive queue broken");
  EXPECT_TRUE(status() & kStatusDeviceNeedsReset);
  EXPECT_EQ(isr(), kIsrConfig);
  state->irq->notify_needs_reset("again");  // once is enough
  EXPECT_EQ(isr(), 0u);  // the ISR read above cleared it; nothing new raised
}

TEST_F(VirtioPciTest, BrokenQueueSetsNeedsResetAndConfigInterrupt) {
  bring_up();
  state->break_queue = true;
  notify(0);
  EXPECT_TRUE(status() & kStatusDeviceNeedsReset);
  EXPECT_EQ(isr(), kIsrQueue | kIsrConfig);
  // Further notifications do not reach a broken queue.
  notify(0);
  EXPECT_EQ(state->processed.size(), 1u);
}

// --- Interrupts -----------------------------------------------------------------

TEST_F(VirtioPciTest, IsrIsReadToClearAndDrivesIntx) {
  bring_up();
  auto irq = dev->interrupt();
  irq->notify_queue(0);
  EXPECT_EQ(intx(), std::vector<bool>{true});
  irq->notify_queue(0);  // already asserted: no new edge
  EXPECT_EQ(intx(), std::vector<bool>{true});
  EXPECT_EQ(isr(), kIsrQueue);
  EXPECT_EQ(intx(), (std::vector<bool>{true, false}));
  EXPECT_EQ(isr(), 0);

  const uint64_t gen = common(cc::kConfigGeneration, 1);
  irq->notify_config();
  EXPECT_EQ(common(cc::kConfigGeneration, 1), (gen + 1) & 0xff);
  EXPECT_EQ(isr(), kIsrConfig);

  // The command register's Interrupt Disable bit holds the line low.
  irq->notify_queue(1);
  EXPECT_EQ(intx().back(), true);
  dev->config_write(pci::kCfgCommand, 2, pci::kCommandMemory | pci::kCommandIntxDisable);
  EXPECT_EQ(intx().back(), false);
  dev->config_write(pci::kCfgCommand, 2, pci::kCommandMemory);
  EXPECT_EQ(intx().back(), true);
  EXPECT_EQ(isr(), kIsrQueue);
  EXPECT_EQ(intx().back(), false);
  EXPECT_TRUE(msis().empty());
}

TEST_F(VirtioPciTest, MsixVectors) {
  bring_up();
  enable_msix();
  // Assignment reads back; a vector the device does not have reads NO_VECTOR.
  set_common(cc::kConfigMsixVector, 2, 2);
  EXPECT_EQ(common(cc::kConfigMsixVector, 2), 2u);
  set_common(cc::kQueueSelect, 2, 0);
  set_common(cc::kQueueMsixVector, 2, 3);
  EXPECT_EQ(common(cc::kQueueMsixVector, 2), kMsiNoVector);
  set_common(cc::kQueueMsixVector, 2, 1);
  EXPECT_EQ(common(cc::kQueueMsixVector, 2), 1u);
  EXPECT_EQ(dev->queue_vector(0), 1);

  const uint64_t buf = drv.alloc(16);
  drv.add_chain({{buf, 16, true}});
  notify(0);
  EXPECT_EQ(msis(), std::vector<uint16_t>{1});
  dev->interrupt()->notify_config();
  EXPECT_EQ(msis(), (std::vector<uint16_t>{1, 2}));
  EXPECT_EQ(isr(), 0);  // the ISR is not used with MSI-X
  EXPECT_TRUE(intx().empty());

  // NO_VECTOR: no interrupt at all.
  set_common(cc::kQueueMsixVector, 2, kMsiNoVector);
  dev->interrupt()->notify_queue(0);
  EXPECT_EQ(msis().size(), 2u);
  // A masked vector becomes pending and fires on unmask.
  set_common(cc::kQueueMsixVector, 2, 0);
  wr(table_offset() + 12, 4, pci::kMsixVectorCtlMask);
  dev->interrupt()->notify_queue(0);
  EXPECT_EQ(msis().size(), 2u);
  EXPECT_TRUE(dev->msix()->pending(0));
  wr(table_offset() + 12, 4, 0);
  EXPECT_EQ(msis().back(), 0);
}

// --- Device configuration and the PCI_CFG window --------------------------------

TEST_F(VirtioPciTest, DeviceConfigForwarded) {
  EXPECT_EQ(rd(VirtioPciDevice::kDeviceCfgOffset, 4), 0x44332211u);
  EXPECT_EQ(rd(VirtioPciDevice::kDeviceCfgOffset + 6, 2), 0x8877u);
  EXPECT_EQ(rd(VirtioPciDevice::kDeviceCfgOffset + 0x100, 4), 0u);
  wr(VirtioPciDevice::kDeviceCfgOffset + 1, 1, 0xab);
  EXPECT_EQ(state->config[1], 0xab);
  // Outside every structure: all-ones; notify area reads 0.
  EXPECT_EQ(rd(VirtioPciDevice::kNotifyOffset, 2), 0u);
  EXPECT_EQ(rd(VirtioPciDevice::kIsrOffset + 4, 4), 0u);
}

TEST_F(VirtioPciTest, PciCfgWindow) {
  const uint16_t cap = dev->pci_cfg_cap_offset();
  ASSERT_NE(cap, 0);
  auto window = [&](uint8_t bar, uint32_t off, uint32_t len) {
    dev->config_write(cap + 4, 1, bar);
    dev->config_write(cap + 8, 4, off);
    dev->config_write(cap + 12, 4, len);
  };
  // Read num_queues through the window.
  window(0, cc::kNumQueues, 2);
  EXPECT_EQ(dev->config_read(cap + 16, 2), 2u);
  // Read the device config.
  window(0, VirtioPciDevice::kDeviceCfgOffset, 4);
  EXPECT_EQ(dev->config_read(cap + 16, 4), 0x44332211u);
  // Write device_status through the window.
  window(0, cc::kDeviceStatus, 1);
  dev->config_write(cap + 16, 1, kStatusAcknowledge);
  EXPECT_EQ(status(), kStatusAcknowledge);
  // Feature negotiation entirely through the window (what firmware does).
  window(0, cc::kDriverFeatureSelect, 4);
  dev->config_write(cap + 16, 4, 1);
  window(0, cc::kDriverFeature, 4);
  dev->config_write(cap + 16, 4, 1);  // VERSION_1 is bit 32
  window(0, cc::kDeviceStatus, 1);
  dev->config_write(cap + 16, 1, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  EXPECT_TRUE(status() & kStatusFeaturesOk);
  // The MSI-X table is reachable too.
  window(0, table_offset() + 8, 4);
  dev->config_write(cap + 16, 4, 0x1234);
  EXPECT_EQ(dev->msix()->message(0).data, 0x1234u);
  // Invalid windows are ignored: bad length, unaligned, other BAR, past the end.
  dev->config_write(cap + 16, 4, 0xdeadbeef);
  window(0, cc::kNumQueues, 3);
  EXPECT_EQ(dev->config_read(cap + 16, 4), 0xdeadbeefu);
  window(0, cc::kNumQueues + 1, 2);
  EXPECT_EQ(dev->config_read(cap + 16, 4), 0xdeadbeefu);
  window(1, cc::kNumQueues, 2);
  EXPECT_EQ(dev->config_read(cap + 16, 4), 0xdeadbeefu);
  dev->config_write(cap + 12, 4, 3);  // (bar 0 + the old offset would be valid)
  window(0, static_cast<uint32_t>(dev->bar_size()), 4);
  EXPECT_EQ(dev->config_read(cap + 16, 4), 0xdeadbeefu);
  // The fixed fields of the capability stay read-only.
  dev->config_write(cap + 3, 1, 1);
  EXPECT_EQ(dev->config_read(cap + 3, 1), kPciCapPciCfg);
}

// --- With an event loop -------------------------------------------------------

TEST_F(VirtioPciTest, DeviceCallsRunOnTheEventLoop) {
  EventLoop loop;
  loop.start();
  make(&loop);
  bring_up();
  ASSERT_EQ(state->activations, 1);
  ASSERT_GE(dev->queue_eventfd(0), 0);

  // Slow path: the notify write arrives as an MMIO access.
  const uint64_t buf = drv.alloc(16);
  drv.add_chain({{buf, 16, true}});
  notify(0);
  // Fast path: KVM would signal the ioeventfd.
  drv.add_chain({{drv.alloc(16), 16, true}});
  const uint64_t one = 1;
  ASSERT_EQ(::write(dev->queue_eventfd(0), &one, 8), 8);
  for (int i = 0; i < 500 && drv.used_idx() < 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_EQ(drv.used_idx(), 2);

  set_status(0);
  EXPECT_EQ(status(), 0);
  {
    std::lock_guard lock(state->mu);
    EXPECT_EQ(state->resets, 1);
    ASSERT_GE(state->threads.size(), 3u);
    for (auto id : state->threads) EXPECT_NE(id, std::this_thread::get_id());
  }
  dev.reset();  // unregisters from the loop before it goes away
  loop.stop();
}

TEST_F(VirtioPciTest, ResetDeviceForMachineStop) {
  EventLoop loop;
  loop.start();
  make(&loop);
  bring_up();
  dev->reset_device();
  EXPECT_EQ(status(), 0);
  EXPECT_EQ(state->resets, 1);
  EXPECT_FALSE(dev->activated());
  dev.reset();
  loop.stop();
}

TEST(VirtioPciConstruction, RejectsBadDevices) {
  auto mem = GuestMemory::create({{0, 1 << 16}});
  EXPECT_THROW(VirtioPciDevice d(nullptr, mem), rz::Error);
  struct NoQueues : FakeDevice {
    using FakeDevice::FakeDevice;
    uint16_t num_queues() const override { return 0; }
  };
  EXPECT_THROW(VirtioPciDevice d(std::make_unique<NoQueues>(std::make_shared<FakeState>()), mem),
               rz::Error);
}

// --- PciPlatform, with a fake VM ------------------------------------------------

// Records what the platform asks of KVM (kept by the test, so it can be
// inspected after the platform is gone).
struct FakeVmState {
  std::mutex mu;
  std::vector<kvm_irq_routing_entry> routing;
  int routing_pushes = 0;
  std::map<int, uint32_t> irqfds;                          // eventfd -> gsi
  std::map<std::pair<uint64_t, uint32_t>, int> ioeventfds;  // (addr, len) -> eventfd
  std::vector<std::pair<uint32_t, bool>> lines;
  bool any_length = true;

  void set_gsi_routing(const std::vector<kvm_irq_routing_entry>& e) {
    std::lock_guard lock(mu);
    routing = e;
    ++routing_pushes;
  }
  void irqfd(int fd, uint32_t gsi, bool assign) {
    std::lock_guard lock(mu);
    if (assign) irqfds[fd] = gsi;
    else if (!irqfds.erase(fd)) throw Error("irqfd not assigned");
  }
  void ioeventfd(int fd, uint64_t addr, uint32_t len, bool assign) {
    std::lock_guard lock(mu);
    if (len == 0 && !any_length) throw Error("KVM_IOEVENTFD: Invalid argument");
    const auto key = std::make_pair(addr, len);
    if (assign) {
      if (ioeventfds.count(key)) throw Error("KVM_IOEVENTFD: File exists");
      ioeventfds[key] = fd;
    } else if (!ioeventfds.erase(key)) {
      throw Error("KVM_IOEVENTFD: not found");
    }
  }
  void irq_line(uint32_t gsi, bool level) {
    std::lock_guard lock(mu);
    lines.emplace_back(gsi, level);
  }
};

struct FakeVm : vmm::PlatformVm {
  explicit FakeVm(std::shared_ptr<FakeVmState> s) : s(std::move(s)) {}
  void set_gsi_routing(const std::vector<kvm_irq_routing_entry>& e) override { s->set_gsi_routing(e); }
  void irqfd(int fd, uint32_t gsi, bool assign) override { s->irqfd(fd, gsi, assign); }
  void ioeventfd(int fd, uint64_t addr, uint32_t len, bool assign) override {
    s->ioeventfd(fd, addr, len, assign);
  }
  void irq_line(uint32_t gsi, bool level) override { s->irq_line(gsi, level); }
  std::shared_ptr<FakeVmState> s;
};

class PciPlatformTest : public ::testing::Test {
 protected:
  void SetUp() override {
    loop.start();
    platform = std::make_unique<vmm::PciPlatform>(std::make_unique<FakeVm>(vm), mem, pio, mmio, loop,
                                                  k64Start, k64End);
  }
  void TearDown() override {
    platform.reset();
    loop.stop();
  }
  uint32_t cfg_read(uint8_t slot, uint16_t off, unsigned size) {
    return platform->bus()->config_read(0, slot, 0, off, size);
  }
  void cfg_write(uint8_t slot, uint16_t off, unsigned size, uint32_t v) {
    platform->bus()->config_write(0, slot, 0, off, size, v);
  }
  // Config mechanism #1 through the PIO bus, as a guest does it.
  uint32_t cf8_read(uint8_t slot, uint16_t off) {
    uint32_t addr = 0x80000000u | uint32_t{slot} << 11 | (off & 0xfc);
    pio.write(0xcf8, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&addr), 4));
    uint32_t v = 0;
    pio.read(0xcfc, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
    return v;
  }
  size_t ioeventfd_count() {
    std::lock_guard lock(vm->mu);
    return vm->ioeventfds.size();
  }

  static constexpr uint64_t k64Start = 0x10000000000ull;  // 1 TiB
  static constexpr uint64_t k64End = k64Start + (1ull << 32);
  GuestMemory mem = GuestMemory::create({{0, 1 << 20}});
  devices::Bus pio, mmio;
  EventLoop loop;
  std::shared_ptr<FakeVmState> vm = std::make_shared<FakeVmState>();
  std::unique_ptr<vmm::PciPlatform> platform;
};

TEST(PciPlatformRoutes, LegacyRoutesPutThePitOnIoapicPin2) {
  const auto r = vmm::default_irqchip_routes();
  auto has = [&](uint32_t gsi, uint32_t chip, uint32_t pin) {
    return std::any_of(r.begin(), r.end(), [&](const kvm_irq_routing_entry& e) {
      return e.gsi == gsi && e.type == KVM_IRQ_ROUTING_IRQCHIP && e.u.irqchip.irqchip == chip &&
             e.u.irqchip.pin == pin;
    });
  };
  auto routed = [&](uint32_t gsi) {
    return std::any_of(r.begin(), r.end(), [&](const kvm_irq_routing_entry& e) { return e.gsi == gsi; });
  };
  // The MADT says ISA IRQ 0 -> GSI 2; KVM's PIT fires GSI 0, so GSI 0 must
  // reach IOAPIC pin 2 (and the 8259's pin 0). GSI 2 is the cascade.
  EXPECT_TRUE(has(0, KVM_IRQCHIP_IOAPIC, 2));
  EXPECT_TRUE(has(0, KVM_IRQCHIP_PIC_MASTER, 0));
  EXPECT_FALSE(routed(2));
  for (uint32_t i = 3; i < 24; ++i) EXPECT_TRUE(has(i, KVM_IRQCHIP_IOAPIC, i)) << i;
  for (uint32_t i = 3; i < 8; ++i) EXPECT_TRUE(has(i, KVM_IRQCHIP_PIC_MASTER, i)) << i;
  for (uint32_t i = 8; i < 16; ++i) EXPECT_TRUE(has(i, KVM_IRQCHIP_PIC_SLAVE, i - 8)) << i;
  EXPECT_EQ(r.size(), 23u + 15u);
}

TEST_F(PciPlatformTest, ConfigAccessAndAcpiFields) {
  EXPECT_EQ(pio.name_at(0xcf8), "pci-config-io");
  EXPECT_EQ(mmio.name_at(x86::kPciEcamBase), "pci-ecam");
  EXPECT_EQ(cf8_read(0, 0) & 0xffff, 0x8086u);  // host bridge
  x86::AcpiConfig acpi;
  platform->fill_acpi(acpi);
  EXPECT_EQ(acpi.ecam_base, x86::kPciEcamBase);
  EXPECT_EQ(platform->ecam_size(), x86::kPciEcamSize);
  EXPECT_EQ(acpi.pci_bus_end, 0);
  EXPECT_EQ(acpi.pci_mmio32_start, x86::kPciMmio32Start);
  EXPECT_EQ(acpi.pci_mmio32_end, x86::kPciMmio32End);
  EXPECT_EQ(acpi.pci_mmio64_start, k64Start);
  EXPECT_EQ(acpi.pci_mmio64_end, k64End);
  platform.reset();
  EXPECT_EQ(pio.name_at(0xcf8), "");
  EXPECT_EQ(mmio.name_at(x86::kPciEcamBase), "");
}

TEST_F(PciPlatformTest, AddDeviceWiresGsisIrqfdsAndBar) {
  const uint8_t slot = platform->add_virtio_device(std::make_unique<VirtioRng>());
  EXPECT_EQ(slot, 1);
  EXPECT_EQ(cf8_read(slot, 0), 0x10441af4u);
  EXPECT_EQ(cfg_read(slot, pci::kCfgInterruptLine, 1), x86::pci_intx_gsi(slot, 0));
  auto dev = platform->virtio_devices().at(0);
  const uint16_t vectors = dev->msix()->vectors();
  EXPECT_EQ(vectors, 2);
  {
    std::lock_guard lock(vm->mu);
    // 40 irqchip routes + one MSI route per vector, starting at GSI 24.
    const size_t legacy = vmm::default_irqchip_routes().size();
    ASSERT_EQ(vm->routing.size(), legacy + vectors);
    EXPECT_EQ(vm->routing[legacy].gsi, vmm::PciPlatform::kFirstMsiGsi);
    EXPECT_EQ(vm->routing[legacy].type, static_cast<uint32_t>(KVM_IRQ_ROUTING_MSI));
    ASSERT_EQ(vm->irqfds.size(), vectors);
    for (uint16_t v = 0; v < vectors; ++v) EXPECT_EQ(platform->msi_gsi(0, v), 24u + v);
  }
  // The BAR went into the 64-bit window; nothing is mapped until the guest
  // enables memory decoding.
  const auto bar = dev->bars().at(0);
  EXPECT_GE(bar.address, k64Start);
  EXPECT_LT(bar.address, k64End);
  EXPECT_EQ(mmio.name_at(bar.address), "");
  EXPECT_EQ(ioeventfd_count(), 0u);

  cfg_write(slot, pci::kCfgCommand, 2, pci::kCommandMemory);
  EXPECT_EQ(mmio.name_at(bar.address), "virtio-rng@1.bar0");
  {
    std::lock_guard lock(vm->mu);
    ASSERT_EQ(vm->ioeventfds.size(), 1u);
    const auto& [key, fd] = *vm->ioeventfds.begin();
    EXPECT_EQ(key.first, bar.address + VirtioPciDevice::notify_offset(0));
    EXPECT_EQ(key.second, 0u);  // any length
    EXPECT_EQ(fd, dev->queue_eventfd(0));
  }
  // Register reads through the MMIO bus reach the transport.
  uint16_t nq = 0;
  mmio.read(bar.address + cc::kNumQueues, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&nq), 2));
  EXPECT_EQ(nq, 1);

  // The guest moves the BAR (below 4 GiB): mapping and ioeventfd follow.
  const uint64_t to = 0xd0000000;
  cfg_write(slot, pci::kCfgBar0 + 4, 4, 0);
  cfg_write(slot, pci::kCfgBar0, 4, static_cast<uint32_t>(to));
  EXPECT_EQ(mmio.name_at(to), "virtio-rng@1.bar0");
  EXPECT_EQ(mmio.name_at(bar.address), "");
  {
    std::lock_guard lock(vm->mu);
    ASSERT_EQ(vm->ioeventfds.size(), 1u);
    EXPECT_EQ(vm->ioeventfds.begin()->first.first, to + VirtioPciDevice::notify_offset(0));
  }
  // Decoding off: off the bus and out of KVM.
  cfg_write(slot, pci::kCfgCommand, 2, 0);
  EXPECT_EQ(mmio.name_at(to), "");
  EXPECT_EQ(ioeventfd_count(), 0u);
  cfg_write(slot, pci::kCfgCommand, 2, pci::kCommandMemory);
  EXPECT_EQ(ioeventfd_count(), 1u);

  platform.reset();
  std::lock_guard lock(vm->mu);
  EXPECT_TRUE(vm->ioeventfds.empty());
  EXPECT_TRUE(vm->irqfds.empty());
  EXPECT_EQ(mmio.name_at(to), "");
}

TEST_F(PciPlatformTest, IoeventfdFallsBackToTwoBytes) {
  vm->any_length = false;
  const uint8_t slot = platform->add_virtio_device(std::make_unique<VirtioRng>());
  cfg_write(slot, pci::kCfgCommand, 2, pci::kCommandMemory);
  std::lock_guard lock(vm->mu);
  ASSERT_EQ(vm->ioeventfds.size(), 1u);
  EXPECT_EQ(vm->ioeventfds.begin()->first.second, 2u);
}

TEST_F(PciPlatformTest, MsixRouteFollowsTableAndDeliversThroughIrqfd) {
  const uint8_t slot = platform->add_virtio_device(std::make_unique<VirtioRng>());
  auto dev = platform->virtio_devices().at(0);
  cfg_write(slot, pci::kCfgCommand, 2, pci::kCommandMemory);
  const uint64_t base = dev->bars()[0].address;
  const uint8_t cap = *dev->with_config([](auto& c) { return c.find_capability(pci::kCapIdMsix); });
  const uint32_t table = dev->config_read(cap + 4, 4) & ~7u;
  auto w32 = [&](uint64_t off, uint32_t v) {
    mmio.write(base + off, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
  };
  const int pushes = vm->routing_pushes;
  cfg_write(slot, cap + 2, 2, pci::kMsixControlEnable);
  w32(table + 16 + 0, 0xfee01000);  // vector 1, still masked: no push
  w32(table + 16 + 8, 0x45);
  EXPECT_EQ(vm->routing_pushes, pushes);
  w32(table + 16 + 12, 0);  // unmask: the route is programmed
  {
    std::lock_guard lock(vm->mu);
    EXPECT_EQ(vm->routing_pushes, pushes + 1);
    const auto& e = vm->routing.at(vmm::default_irqchip_routes().size() + 1);
    EXPECT_EQ(e.gsi, platform->msi_gsi(0, 1));
    EXPECT_EQ(e.u.msi.address_lo, 0xfee01000u);
    EXPECT_EQ(e.u.msi.data, 0x45u);
  }
  // A queue interrupt on vector 1 is a write to that vector's irqfd.
  int fd1 = -1;
  {
    std::lock_guard lock(vm->mu);
    for (auto& [fd, gsi] : vm->irqfds)
      if (gsi == platform->msi_gsi(0, 1)) fd1 = fd;
  }
  ASSERT_GE(fd1, 0);
  dev->msix()->notify(1);
  uint64_t count = 0;
  EXPECT_EQ(::read(fd1, &count, 8), 8);
  EXPECT_EQ(count, 1u);
}

TEST_F(PciPlatformTest, IntxIsSharedPerGsi) {
  // Slots 1 and 5 share GSI 17 (16 + slot % 4 for INTA#).
  for (int i = 0; i < 5; ++i) platform->add_virtio_device(std::make_unique<VirtioRng>());
  EXPECT_EQ(platform->intx_gsi(0), platform->intx_gsi(4));
  const uint32_t gsi = platform->intx_gsi(0);
  auto a = platform->virtio_devices()[0]->interrupt();
  auto b = platform->virtio_devices()[4]->interrupt();
  auto lines = [&] {
    std::lock_guard lock(vm->mu);
    return vm->lines;
  };
  a->notify_queue(0);
  b->notify_queue(0);
  EXPECT_EQ(lines(), (std::vector<std::pair<uint32_t, bool>>{{gsi, true}}));
  // Reading A's ISR lowers A, but B still holds the line.
  uint8_t isr = 0;
  platform->virtio_devices()[0]->bar_read(0, VirtioPciDevice::kIsrOffset, std::span<uint8_t>(&isr, 1));
  EXPECT_EQ(isr, kIsrQueue);
  EXPECT_EQ(lines().size(), 1u);
  platform->virtio_devices()[4]->bar_read(0, VirtioPciDevice::kIsrOffset, std::span<uint8_t>(&isr, 1));
  EXPECT_EQ(lines(), (std::vector<std::pair<uint32_t, bool>>{{gsi, true}, {gsi, false}}));
}

TEST_F(PciPlatformTest, ResetAllStopsDevicesOnTheLoop) {
  const uint8_t slot = platform->add_virtio_device(std::make_unique<VirtioRng>());
  auto dev = platform->virtio_devices().at(0);
  cfg_write(slot, pci::kCfgCommand, 2, pci::kCommandMemory);
  const uint64_t base = dev->bars()[0].address;
  auto w = [&](uint32_t off, size_t n, uint64_t v) {
    mmio.write(base + off, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&v), n));
  };
  test::QueueDriver drv(mem, 8, 0x1000, 0x10000, 0x1000);
  w(cc::kDeviceStatus, 1, kStatusAcknowledge | kStatusDriver);
  w(cc::kDriverFeatureSelect, 4, 1);
  w(cc::kDriverFeature, 4, 1);
  w(cc::kDeviceStatus, 1, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  w(cc::kQueueSize, 2, 8);
  w(cc::kQueueDesc, 8, drv.desc_gpa());
  w(cc::kQueueDriver, 8, drv.avail_gpa());
  w(cc::kQueueDevice, 8, drv.used_gpa());
  w(cc::kQueueEnable, 2, 1);
  w(cc::kDeviceStatus, 1, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  ASSERT_TRUE(dev->activated());
  // A kick through the queue's eventfd (what KVM's ioeventfd does).
  drv.add_chain({{drv.alloc(32), 32, true}});
  const uint64_t one = 1;
  ASSERT_EQ(::write(dev->queue_eventfd(0), &one, 8), 8);
  for (int i = 0; i < 500 && drv.used_idx() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_EQ(drv.used_idx(), 1);
  platform->reset_all();
  EXPECT_FALSE(dev->activated());
  EXPECT_EQ(dev->device_status(), 0);
}

}  // namespace
}  // namespace rz::virtio
