// Unit tests for virtio-rng (src/virtio/rng.h), driven through a mock guest
// driver (tests/unit/virtio_test_driver.h), and once end to end through the
// virtio-pci transport.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "memory/guest_memory.h"
#include "virtio/pci_transport.h"
#include "virtio/rng.h"
#include "virtio/virtio_defs.h"
#include "virtio_test_driver.h"

namespace rz::virtio {
namespace {

using memory::GuestMemory;

constexpr uint64_t kRingGpa = 0x1000;
constexpr uint64_t kDataGpa = 0x10000;

class VirtioRngTest : public ::testing::Test {
 protected:
  void activate(uint64_t features = feature_bit(kVirtioFVersion1)) {
    drv.configure(queue);
    queue.set_features(features);
    ASSERT_TRUE(rng->activate(mem, features, {&queue}, irq));
  }
  static bool all_equal(const std::vector<uint8_t>& v, uint8_t b) {
    return std::all_of(v.begin(), v.end(), [b](uint8_t x) { return x == b; });
  }

  GuestMemory mem = GuestMemory::create({{0, 1 << 20}});
  test::QueueDriver drv{mem, 16, kRingGpa, kDataGpa, 0xf0000};
  Queue queue{256};
  std::shared_ptr<test::FakeInterrupt> irq = std::make_shared<test::FakeInterrupt>();
  std::unique_ptr<VirtioRng> rng = std::make_unique<VirtioRng>();
};

TEST_F(VirtioRngTest, Identity) {
  EXPECT_EQ(rng->device_type(), kDeviceIdEntropy);
  EXPECT_EQ(rng->num_queues(), 1);
  EXPECT_EQ(rng->device_features(), feature_bit(kVirtioFVersion1) |
                                        feature_bit(kVirtioFIndirectDesc) |
                                        feature_bit(kVirtioFEventIdx));
  uint8_t cfg[8];
  std::memset(cfg, 0xff, sizeof cfg);
  rng->read_config(0, cfg);
  EXPECT_TRUE(std::all_of(std::begin(cfg), std::end(cfg), [](uint8_t b) { return b == 0; }));
  EXPECT_FALSE(rng->activate(mem, 0, {}, irq));  // needs exactly one queue
}

TEST_F(VirtioRngTest, FillsWritableBuffers) {
  activate();
  const uint64_t a = drv.alloc(100), b = drv.alloc(50);
  drv.fill(a, 100, 0);
  drv.fill(b, 50, 0);
  const uint16_t head = drv.add_chain({{a, 100, true}, {b, 50, true}});
  rng->process_queue(0);
  auto used = drv.pop_used();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->id, head);
  EXPECT_EQ(used->len, 150u);
  // 100 zero bytes out of getrandom() has probability 2^-800.
  EXPECT_FALSE(all_equal(drv.read_bytes(a, 100), 0));
  EXPECT_FALSE(all_equal(drv.read_bytes(b, 50), 0));
  EXPECT_EQ(irq->queue_count(0), 1u);
  EXPECT_EQ(rng->bytes_served(), 150u);
}

TEST_F(VirtioRngTest, ReadOnlyChainGetsNothing) {
  activate();
  const uint64_t a = drv.alloc(64);
  drv.fill(a, 64, 0x5a);
  drv.add_chain({{a, 64, false}});
  rng->process_queue(0);
  auto used = drv.pop_used();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->len, 0u);
  EXPECT_TRUE(all_equal(drv.read_bytes(a, 64), 0x5a));
  // A readable header before writable space: only the writable part is filled.
  const uint64_t h = drv.alloc(16), w = drv.alloc(32);
  drv.fill(h, 16, 0x5a);
  drv.add_chain({{h, 16, false}, {w, 32, true}});
  rng->process_queue(0);
  used = drv.pop_used();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->len, 32u);
  EXPECT_TRUE(all_equal(drv.read_bytes(h, 16), 0x5a));
}

TEST_F(VirtioRngTest, OversizedChainIsBounded) {
  activate();
  const uint32_t big = 2 * VirtioRng::kMaxBytesPerChain;
  const uint64_t a = drv.alloc(big);
  drv.fill(a, big, 0xaa);
  drv.add_chain({{a, big, true}});
  rng->process_queue(0);
  auto used = drv.pop_used();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->len, VirtioRng::kMaxBytesPerChain);
  // Nothing past the bound was touched.
  EXPECT_TRUE(all_equal(drv.read_bytes(a + VirtioRng::kMaxBytesPerChain, big - VirtioRng::kMaxBytesPerChain), 0xaa));
}

TEST_F(VirtioRngTest, MalformedChainCompletesEmptyAndQueueGoesOn) {
  activate();
  const uint64_t a = drv.alloc(16);
  // A buffer outside guest memory.
  const uint16_t bad = drv.add_chain({{uint64_t{1} << 32, 16, true}});
  const uint16_t good = drv.add_chain({{a, 16, true}});
  rng->process_queue(0);
  auto u1 = drv.pop_used(), u2 = drv.pop_used();
  ASSERT_TRUE(u1 && u2);
  EXPECT_EQ(u1->id, bad);
  EXPECT_EQ(u1->len, 0u);
  EXPECT_EQ(u2->id, good);
  EXPECT_EQ(u2->len, 16u);
  EXPECT_FALSE(queue.broken());
}

TEST_F(VirtioRngTest, IndirectChain) {
  activate(feature_bit(kVirtioFVersion1) | feature_bit(kVirtioFIndirectDesc));
  const uint64_t a = drv.alloc(8), b = drv.alloc(8);
  drv.add_indirect_chain({{a, 8, true}, {b, 8, true}});
  rng->process_queue(0);
  auto used = drv.pop_used();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->len, 16u);
}

TEST_F(VirtioRngTest, EventIdxSuppressesInterrupts) {
  activate(feature_bit(kVirtioFVersion1) | feature_bit(kVirtioFEventIdx));
  drv.add_chain({{drv.alloc(8), 8, true}});
  rng->process_queue(0);
  EXPECT_EQ(irq->queue_count(0), 1u);
  // The driver asks to be interrupted only after used index 10.
  drv.set_used_event(10);
  drv.add_chain({{drv.alloc(8), 8, true}});
  rng->process_queue(0);
  EXPECT_EQ(drv.used_idx(), 2);
  EXPECT_EQ(irq->queue_count(0), 1u);
  // With EVENT_IDX the device publishes avail_event for the next kick.
  EXPECT_EQ(drv.avail_event(), 2);
}

TEST_F(VirtioRngTest, InjectedSourceAndFailure) {
  bool fail = false;
  rng = std::make_unique<VirtioRng>(64, [&](std::span<uint8_t> out) {
    if (fail) return false;
    std::fill(out.begin(), out.end(), 0x42);
    return true;
  });
  EXPECT_EQ(rng->queue_max_size(0), 64);
  activate();
  const uint64_t a = drv.alloc(24);
  drv.add_chain({{a, 24, true}});
  rng->process_queue(0);
  EXPECT_EQ(drv.pop_used()->len, 24u);
  EXPECT_TRUE(all_equal(drv.read_bytes(a, 24), 0x42));
  fail = true;
  drv.add_chain({{a, 24, true}});
  rng->process_queue(0);
  EXPECT_EQ(drv.pop_used()->len, 0u);
}

TEST_F(VirtioRngTest, ResetStopsService) {
  activate();
  rng->reset();
  drv.add_chain({{drv.alloc(8), 8, true}});
  rng->process_queue(0);
  EXPECT_EQ(drv.used_idx(), 0);
  EXPECT_EQ(irq->queue_total(), 0u);
}

TEST_F(VirtioRngTest, EndToEndThroughPciTransport) {
  VirtioPciDevice pci(std::make_unique<VirtioRng>(), mem);
  std::vector<bool> intx;
  pci.set_intx_handler([&](bool l) { intx.push_back(l); });
  auto w = [&](uint32_t off, size_t size, uint64_t v) {
    pci.bar_write(0, off, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), size));
  };
  auto r = [&](uint32_t off, size_t size) {
    uint64_t v = 0;
    pci.bar_read(0, off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), size));
    return v;
  };
  namespace cc = common_cfg;
  EXPECT_EQ(pci.config_read(pci::kCfgDeviceId, 2), 0x1044u);
  w(cc::kDeviceStatus, 1, kStatusAcknowledge | kStatusDriver);
  w(cc::kDriverFeatureSelect, 4, 1);
  w(cc::kDriverFeature, 4, 1);  // VERSION_1
  w(cc::kDeviceStatus, 1, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  ASSERT_TRUE(r(cc::kDeviceStatus, 1) & kStatusFeaturesOk);
  w(cc::kQueueSelect, 2, 0);
  w(cc::kQueueSize, 2, drv.size());
  w(cc::kQueueDesc, 8, drv.desc_gpa());
  w(cc::kQueueDriver, 8, drv.avail_gpa());
  w(cc::kQueueDevice, 8, drv.used_gpa());
  w(cc::kQueueEnable, 2, 1);
  w(cc::kDeviceStatus, 1, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  const uint64_t a = drv.alloc(32);
  drv.add_chain({{a, 32, true}});
  w(static_cast<uint32_t>(VirtioPciDevice::notify_offset(0)), 2, 0);
  auto used = drv.pop_used();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->len, 32u);
  EXPECT_EQ(intx, std::vector<bool>{true});
  EXPECT_EQ(r(VirtioPciDevice::kIsrOffset, 1), kIsrQueue);
  EXPECT_EQ(intx, (std::vector<bool>{true, false}));
  pci.reset_device();
}

}  // namespace
}  // namespace rz::virtio
