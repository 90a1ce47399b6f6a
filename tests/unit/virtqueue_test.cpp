// Unit tests for the split virtqueue (src/virtio/queue.h), against a mock
// guest: 1 MiB of guest memory and a small driver that lays out descriptors
// and rings the way a virtio driver would.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "memory/guest_memory.h"
#include "util/error.h"
#include "virtio/queue.h"
#include "virtio/virtio_defs.h"

namespace rz::virtio {
namespace {

using memory::GuestMemory;

constexpr uint64_t kMemSize = 1 << 20;
constexpr uint64_t kDescGpa = 0x1000;
constexpr uint64_t kAvailGpa = 0x3000;
constexpr uint64_t kUsedGpa = 0x4000;
constexpr uint64_t kDataGpa = 0x10000;

constexpr uint16_t N = kVirtqDescFNext;
constexpr uint16_t W = kVirtqDescFWrite;
constexpr uint16_t I = kVirtqDescFIndirect;

// The driver's half of a split virtqueue, writing straight into guest memory.
class Driver {
 public:
  Driver(const GuestMemory& mem, uint16_t size) : mem_(mem), size_(size) {}

  void desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags = 0, uint16_t next = 0) {
    desc_at(kDescGpa + 16 * uint64_t{i}, addr, len, flags, next);
  }
  // A descriptor in an arbitrary table (e.g. an indirect one).
  void desc_at(uint64_t gpa, uint64_t addr, uint32_t len, uint16_t flags = 0,
               uint16_t next = 0) {
    ASSERT_TRUE(mem_.write_obj(gpa, addr));
    ASSERT_TRUE(mem_.write_obj(gpa + 8, len));
    ASSERT_TRUE(mem_.write_obj(gpa + 12, flags));
    ASSERT_TRUE(mem_.write_obj(gpa + 14, next));
  }
  // Makes `head` available and publishes the new avail->idx.
  void push(uint16_t head) {
    const uint16_t idx = avail_idx();
    ASSERT_TRUE(mem_.write_obj<uint16_t>(kAvailGpa + 4 + 2 * (idx % size_), head));
    set_avail_idx(static_cast<uint16_t>(idx + 1));
  }
  uint16_t avail_idx() const { return *mem_.read_obj<uint16_t>(kAvailGpa + 2); }
  void set_avail_idx(uint16_t v) { ASSERT_TRUE(mem_.write_obj(kAvailGpa + 2, v)); }
  void set_avail_flags(uint16_t v) { ASSERT_TRUE(mem_.write_obj(kAvailGpa, v)); }
  void set_used_event(uint16_t v) { ASSERT_TRUE(mem_.write_obj(kAvailGpa + 4 + 2 * size_, v)); }

  uint16_t used_flags() const { return *mem_.read_obj<uint16_t>(kUsedGpa); }
  uint16_t used_idx() const { return *mem_.read_obj<uint16_t>(kUsedGpa + 2); }
  uint32_t used_id(uint16_t slot) const { return *mem_.read_obj<uint32_t>(kUsedGpa + 4 + 8 * slot); }
  uint32_t used_len(uint16_t slot) const {
    return *mem_.read_obj<uint32_t>(kUsedGpa + 8 + 8 * slot);
  }
  uint16_t avail_event() const { return *mem_.read_obj<uint16_t>(kUsedGpa + 4 + 8 * size_); }

 private:
  const GuestMemory& mem_;
  uint16_t size_;
};

class VirtqueueTest : public ::testing::Test {
 protected:
  void SetUp() override { configure(q, 16); }

  void configure(Queue& queue, uint16_t size) {
    queue.set_size(size);
    queue.set_desc_table(kDescGpa);
    queue.set_avail_ring(kAvailGpa);
    queue.set_used_ring(kUsedGpa);
    queue.set_ready(true);
  }
  // Pops a chain that must exist.
  DescriptorChain pop_one() {
    auto c = q.pop(mem);
    EXPECT_TRUE(c.has_value());
    return c ? std::move(*c) : DescriptorChain{};
  }
  ChainError pop_error() { return pop_one().error(); }

  GuestMemory mem = GuestMemory::create({{0, kMemSize}});
  Queue q{256};
  Driver drv{mem, 16};
};

// --- Configuration -------------------------------------------------------------

TEST(VirtqueueConfig, ConstructorRejectsBadMaxSize) {
  EXPECT_THROW(Queue(0), Error);
  EXPECT_THROW(Queue(3), Error);
  EXPECT_THROW(Queue(100), Error);
  EXPECT_THROW(Queue(65535), Error);
  EXPECT_NO_THROW(Queue(1));
  EXPECT_NO_THROW(Queue(32768));
  EXPECT_THROW(Queue(256, QueueLimits{0, 100}), Error);
  EXPECT_THROW(Queue(256, QueueLimits{65537, 100}), Error);
  Queue q(64);
  EXPECT_EQ(q.max_size(), 64);
  EXPECT_EQ(q.size(), 64);
  EXPECT_FALSE(q.ready());
}

TEST(VirtqueueConfig, SetFeatures) {
  Queue q;
  q.set_features(feature_bit(kVirtioFVersion1) | feature_bit(kVirtioFEventIdx));
  EXPECT_TRUE(q.event_idx());
  EXPECT_FALSE(q.indirect_desc());
  q.set_features(feature_bit(kVirtioFIndirectDesc));
  EXPECT_FALSE(q.event_idx());
  EXPECT_TRUE(q.indirect_desc());
}

TEST_F(VirtqueueTest, IsValidChecksSizeAlignmentAndMemory) {
  EXPECT_TRUE(q.is_valid(mem));

  q.set_ready(false);
  EXPECT_FALSE(q.is_valid(mem));
  q.set_ready(true);

  for (uint16_t bad : {0, 3, 24, 512}) {
    q.set_size(bad);
    EXPECT_FALSE(q.is_valid(mem)) << bad;
  }
  q.set_size(256);
  EXPECT_TRUE(q.is_valid(mem));
  q.set_size(16);

  q.set_desc_table(kDescGpa + 8);  // needs 16
  EXPECT_FALSE(q.is_valid(mem));
  q.set_desc_table(kDescGpa);
  q.set_avail_ring(kAvailGpa + 1);  // needs 2
  EXPECT_FALSE(q.is_valid(mem));
  q.set_avail_ring(kAvailGpa + 2);
  EXPECT_TRUE(q.is_valid(mem));
  q.set_avail_ring(kAvailGpa);
  q.set_used_ring(kUsedGpa + 2);  // needs 4
  EXPECT_FALSE(q.is_valid(mem));
  q.set_used_ring(kUsedGpa + 4);
  EXPECT_TRUE(q.is_valid(mem));
  q.set_used_ring(kUsedGpa);

  // Each area must lie entirely inside guest memory.
  q.set_desc_table(kMemSize - 16 * 16);
  EXPECT_TRUE(q.is_valid(mem));
  q.set_desc_table(kMemSize - 16 * 15);
  EXPECT_FALSE(q.is_valid(mem));
  q.set_desc_table(kDescGpa);
  q.set_avail_ring(kMemSize - (6 + 2 * 16) + 2);
  EXPECT_FALSE(q.is_valid(mem));
  q.set_avail_ring(kMemSize - (6 + 2 * 16));
  EXPECT_TRUE(q.is_valid(mem));
  q.set_avail_ring(kAvailGpa);
  q.set_used_ring(kMemSize - 4);
  EXPECT_FALSE(q.is_valid(mem));
  q.set_used_ring(~uint64_t{0} - 3);  // aligned, wraps around 2^64
  EXPECT_FALSE(q.is_valid(mem));
}

TEST_F(VirtqueueTest, AreasSpanningTwoRegionsAreInvalid) {
  GuestMemory two = GuestMemory::create({{0, 0x2000}, {0x2000, 0x10000}});
  q.set_desc_table(0x2000 - 0x80);  // 16 * 16 bytes across the region border
  EXPECT_FALSE(q.is_valid(two));
}

TEST_F(VirtqueueTest, WorksInRegionAtOddGuestAddress) {
  // A region starting at an odd guest address. Host mappings keep the guest
  // address's offset within 2 MiB, so spec-aligned ring fields stay aligned
  // on the host too, and the queue works as anywhere else.
  GuestMemory odd = GuestMemory::create({{1, kMemSize}});
  ASSERT_EQ(reinterpret_cast<uintptr_t>(odd.host_ptr(kAvailGpa, 2)) % 4096, kAvailGpa % 4096);
  Driver d(odd, 16);
  q.set_event_idx(true);
  d.desc(0, kDataGpa, 8, W);
  d.push(0);
  auto c = q.pop(odd);
  ASSERT_TRUE(c && c->ok());
  EXPECT_FALSE(q.pop(odd));
  EXPECT_EQ(d.avail_event(), 1);
  ASSERT_TRUE(q.add_used(odd, c->head(), 8));
  EXPECT_EQ(d.used_idx(), 1);
  EXPECT_TRUE(q.needs_notification(odd));
}

TEST_F(VirtqueueTest, ResetRestoresInitialState) {
  q.set_features(~uint64_t{0});
  drv.desc(0, kDataGpa, 8);
  drv.push(0);
  ASSERT_TRUE(q.pop(mem));
  ASSERT_TRUE(q.add_used(mem, 0, 0));
  q.reset();
  EXPECT_FALSE(q.ready());
  EXPECT_EQ(q.size(), 256);
  EXPECT_EQ(q.desc_table(), 0u);
  EXPECT_EQ(q.avail_ring(), 0u);
  EXPECT_EQ(q.used_ring(), 0u);
  EXPECT_FALSE(q.event_idx());
  EXPECT_FALSE(q.indirect_desc());
  EXPECT_EQ(q.next_avail(), 0);
  EXPECT_EQ(q.next_used(), 0);
  EXPECT_FALSE(q.broken());
  EXPECT_FALSE(q.pop(mem));  // not ready
}

TEST_F(VirtqueueTest, UnusableQueueDoesNothing) {
  drv.desc(0, kDataGpa, 8);
  drv.push(0);
  q.set_ready(false);
  EXPECT_FALSE(q.pop(mem));
  EXPECT_FALSE(q.add_used(mem, 0, 0));
  q.set_ready(true);
  q.set_size(12);  // not a power of 2
  EXPECT_FALSE(q.pop(mem));
  EXPECT_FALSE(q.broken());
  q.set_size(16);
  EXPECT_TRUE(q.pop(mem));
}

// --- Popping chains --------------------------------------------------------------

TEST_F(VirtqueueTest, EmptyQueuePopsNothing) {
  EXPECT_FALSE(q.pop(mem));
  EXPECT_FALSE(q.broken());
}

TEST_F(VirtqueueTest, SingleReadableBuffer) {
  drv.desc(3, kDataGpa, 100);
  drv.push(3);
  auto c = pop_one();
  ASSERT_TRUE(c.ok()) << c.error_message();
  EXPECT_EQ(c.head(), 3);
  ASSERT_EQ(c.buffers().size(), 1u);
  EXPECT_EQ(c.buffers()[0].gpa, kDataGpa);
  EXPECT_EQ(c.buffers()[0].len, 100u);
  EXPECT_FALSE(c.buffers()[0].writable);
  EXPECT_EQ(c.buffers()[0].host.data(), mem.host_ptr(kDataGpa, 100));
  EXPECT_EQ(c.buffers()[0].host.size(), 100u);
  EXPECT_EQ(c.readable().size(), 1u);
  EXPECT_TRUE(c.writable().empty());
  EXPECT_EQ(c.readable_len(), 100u);
  EXPECT_EQ(c.writable_len(), 0u);
  EXPECT_FALSE(q.pop(mem));
  EXPECT_EQ(q.next_avail(), 1);
}

TEST_F(VirtqueueTest, MultiBufferChainReadablesThenWritables) {
  // 5 -> 2 -> 9 -> 0: two readable, two writable, in table order 5,2,9,0.
  drv.desc(5, kDataGpa, 16, N, 2);
  drv.desc(2, kDataGpa + 0x100, 512, N, 9);
  drv.desc(9, kDataGpa + 0x1000, 4096, W | N, 0);
  drv.desc(0, kDataGpa + 0x3000, 1, W);
  drv.push(5);
  auto c = pop_one();
  ASSERT_TRUE(c.ok()) << c.error_message();
  EXPECT_EQ(c.head(), 5);
  ASSERT_EQ(c.buffers().size(), 4u);
  ASSERT_EQ(c.readable().size(), 2u);
  ASSERT_EQ(c.writable().size(), 2u);
  EXPECT_EQ(c.readable()[1].gpa, kDataGpa + 0x100);
  EXPECT_EQ(c.writable()[0].gpa, kDataGpa + 0x1000);
  EXPECT_TRUE(c.writable()[0].writable);
  EXPECT_EQ(c.writable()[1].len, 1u);
  EXPECT_EQ(c.readable_len(), 528u);
  EXPECT_EQ(c.writable_len(), 4097u);
}

TEST_F(VirtqueueTest, WritableOnlyChain) {
  drv.desc(0, kDataGpa, 64, W | N, 1);
  drv.desc(1, kDataGpa + 64, 64, W);
  drv.push(0);
  auto c = pop_one();
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c.readable().empty());
  EXPECT_EQ(c.writable().size(), 2u);
}

TEST_F(VirtqueueTest, SeveralChainsInOrder) {
  for (uint16_t i = 0; i < 16; ++i) {
    drv.desc(i, kDataGpa + 0x100 * i, 0x10 + i);
    drv.push(static_cast<uint16_t>(15 - i));
  }
  for (uint16_t i = 0; i < 16; ++i) {
    auto c = pop_one();
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(c.head(), 15 - i);
    EXPECT_EQ(c.readable_len(), 0x10u + (15 - i));
  }
  EXPECT_FALSE(q.pop(mem));
}

TEST_F(VirtqueueTest, ZeroLengthDescriptorsCarryNoBuffer) {
  // A zero-length descriptor is legal; its address is never touched.
  drv.desc(0, ~uint64_t{0}, 0, N, 1);
  drv.desc(1, kDataGpa, 8, W | N, 2);
  drv.desc(2, 0xdead'0000'0000, 0, W);
  drv.push(0);
  auto c = pop_one();
  ASSERT_TRUE(c.ok()) << c.error_message();
  ASSERT_EQ(c.buffers().size(), 1u);
  EXPECT_TRUE(c.buffers()[0].writable);
}

TEST_F(VirtqueueTest, IndicesWrapAt16Bits) {
  // The device resumes at index 65533: both avail and used indices wrap.
  q.set_next_avail(65533);
  q.set_next_used(65533);
  drv.set_avail_idx(65533);
  for (uint16_t i = 0; i < 6; ++i) {
    drv.desc(i, kDataGpa + 0x100 * i, 32, W);
    drv.push(i);
  }
  EXPECT_EQ(drv.avail_idx(), 3);  // 65533 + 6, wrapped
  for (uint16_t i = 0; i < 6; ++i) {
    auto c = pop_one();
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(c.head(), i);
    ASSERT_TRUE(q.add_used(mem, c.head(), 10 + i));
  }
  EXPECT_FALSE(q.pop(mem));
  EXPECT_EQ(q.next_avail(), 3);
  EXPECT_EQ(drv.used_idx(), 3);
  // Used slots are index % 16: 65533 % 16 == 13, so heads 0..5 are at 13,14,15,0,1,2.
  for (uint16_t i = 0; i < 6; ++i) {
    const uint16_t slot = static_cast<uint16_t>((65533u + i) % 16);
    EXPECT_EQ(drv.used_id(slot), i);
    EXPECT_EQ(drv.used_len(slot), 10u + i);
  }
}

TEST_F(VirtqueueTest, FullRingIsAccepted) {
  // Exactly Queue Size entries outstanding is a full ring, not an error.
  for (uint16_t i = 0; i < 16; ++i) {
    drv.desc(i, kDataGpa, 1);
    drv.push(i);
  }
  for (int i = 0; i < 16; ++i) ASSERT_TRUE(pop_one().ok());
  EXPECT_FALSE(q.broken());
}

TEST_F(VirtqueueTest, AvailIdxTooFarAheadBreaksQueue) {
  drv.desc(0, kDataGpa, 1);
  drv.set_avail_idx(17);  // 17 outstanding in a ring of 16
  EXPECT_FALSE(q.pop(mem));
  EXPECT_TRUE(q.broken());
  EXPECT_EQ(q.error(), QueueError::kAvailIdxTooFar);
  EXPECT_STRNE(q.error_message(), "");
  // Stays broken, even once the index looks sane again.
  drv.set_avail_idx(1);
  EXPECT_FALSE(q.pop(mem));
  q.reset();
  configure(q, 16);
  EXPECT_FALSE(q.broken());
  EXPECT_TRUE(q.pop(mem));
}

TEST_F(VirtqueueTest, AvailIdxGoingBackwardsBreaksQueue) {
  q.set_next_avail(10);
  drv.set_avail_idx(9);  // 65535 "outstanding"
  EXPECT_FALSE(q.pop(mem));
  EXPECT_EQ(q.error(), QueueError::kAvailIdxTooFar);
}

TEST_F(VirtqueueTest, HeadOutOfRangeBreaksQueue) {
  drv.push(16);
  EXPECT_FALSE(q.pop(mem));
  EXPECT_EQ(q.error(), QueueError::kHeadOutOfRange);
}

TEST_F(VirtqueueTest, RingsOutsideMemoryBreakQueue) {
  q.set_avail_ring(kMemSize);
  EXPECT_FALSE(q.is_valid(mem));
  EXPECT_FALSE(q.pop(mem));
  EXPECT_EQ(q.error(), QueueError::kRingInaccessible);

  Queue q2(16);
  configure(q2, 16);
  q2.set_used_ring(kMemSize - 4);
  drv.desc(0, kDataGpa, 1);
  drv.push(0);
  auto c = q2.pop(mem);
  ASSERT_TRUE(c);
  EXPECT_FALSE(q2.add_used(mem, c->head(), 0));
  EXPECT_EQ(q2.error(), QueueError::kRingInaccessible);
}

TEST_F(VirtqueueTest, MalformedChainConsumesHeadAndQueueGoesOn) {
  drv.desc(0, kDataGpa, 8, N, 99);  // next out of range
  drv.desc(1, kDataGpa, 8);
  drv.push(0);
  drv.push(1);
  auto bad = pop_one();
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.error(), ChainError::kIndexOutOfRange);
  EXPECT_EQ(bad.head(), 0);
  EXPECT_TRUE(bad.buffers().empty());
  EXPECT_EQ(bad.readable_len(), 0u);
  ASSERT_TRUE(q.add_used(mem, bad.head(), 0));
  auto good = pop_one();
  EXPECT_TRUE(good.ok());
  EXPECT_EQ(good.head(), 1);
  EXPECT_FALSE(q.broken());
  EXPECT_EQ(drv.used_idx(), 1);
  EXPECT_EQ(drv.used_id(0), 0u);
  EXPECT_EQ(drv.used_len(0), 0u);
}

TEST_F(VirtqueueTest, NextIndexOutOfRange) {
  drv.desc(0, kDataGpa, 8, N, 16);
  drv.push(0);
  EXPECT_EQ(pop_error(), ChainError::kIndexOutOfRange);
}

TEST_F(VirtqueueTest, NextLoopIsDetected) {
  drv.desc(0, kDataGpa, 8, N, 1);
  drv.desc(1, kDataGpa, 8, N, 0);
  drv.push(0);
  EXPECT_EQ(pop_error(), ChainError::kChainTooLong);
  drv.desc(2, kDataGpa, 8, N, 2);  // a descriptor pointing at itself
  drv.push(2);
  EXPECT_EQ(pop_error(), ChainError::kChainTooLong);
}

TEST_F(VirtqueueTest, ChainAsLongAsTheTableIsAccepted) {
  for (uint16_t i = 0; i < 16; ++i) {
    drv.desc(i, kDataGpa + i, 1, i < 15 ? N : 0, static_cast<uint16_t>(i + 1));
  }
  drv.push(0);
  auto c = pop_one();
  ASSERT_TRUE(c.ok()) << c.error_message();
  EXPECT_EQ(c.buffers().size(), 16u);
}

TEST_F(VirtqueueTest, BuffersOutsideGuestMemory) {
  const struct {
    uint64_t addr;
    uint32_t len;
  } cases[] = {
      {kMemSize, 1},                  // just past the end
      {kMemSize - 4, 8},              // straddles the end
      {0x10'0000'0000, 4096},         // far away
      {~uint64_t{0} - 3, 16},         // wraps around 2^64
      {~uint64_t{0}, 1},              // last byte of the address space
      {0, kMemSize + 1},              // longer than memory
  };
  for (const auto& tc : cases) {
    drv.desc(0, kDataGpa, 8, N, 1);
    drv.desc(1, tc.addr, tc.len, W);
    drv.push(0);
    EXPECT_EQ(pop_error(), ChainError::kBufferOutOfRange) << std::hex << tc.addr;
  }
  // The last byte of guest memory is fine.
  drv.desc(0, kMemSize - 1, 1);
  drv.push(0);
  EXPECT_TRUE(pop_one().ok());
}

TEST_F(VirtqueueTest, BufferSpanningTwoRegionsIsRejected) {
  GuestMemory two = GuestMemory::create({{0, 0x20000}, {0x20000, 0x20000}});
  Driver d2(two, 16);
  d2.desc(0, 0x1fff0, 0x20);
  d2.push(0);
  auto c = q.pop(two);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->error(), ChainError::kBufferOutOfRange);
}

TEST_F(VirtqueueTest, DescriptorTableOutsideMemory) {
  // An invalid (unchecked) queue whose table runs off the end of memory.
  q.set_desc_table(kMemSize - 16);
  drv.push(1);
  EXPECT_EQ(pop_error(), ChainError::kDescriptorUnreadable);
}

TEST_F(VirtqueueTest, ReadableAfterWritableIsRejected) {
  drv.desc(0, kDataGpa, 8, W | N, 1);
  drv.desc(1, kDataGpa + 8, 8, N, 2);
  drv.desc(2, kDataGpa + 16, 8, W);
  drv.push(0);
  EXPECT_EQ(pop_error(), ChainError::kReadableAfterWritable);
}

TEST_F(VirtqueueTest, TotalLengthBound) {
  // The sum of the lengths does not fit the used ring's 32-bit len.
  drv.desc(0, kDataGpa, 8, N, 1);
  drv.desc(1, 0, 0xffff'ffff, W);
  drv.push(0);
  EXPECT_EQ(pop_error(), ChainError::kTotalLengthTooLarge);

  Queue small(16, QueueLimits{1024, 100});
  configure(small, 16);
  small.set_next_avail(q.next_avail());
  drv.desc(0, kDataGpa, 60, N, 1);
  drv.desc(1, kDataGpa + 60, 40, W);
  drv.push(0);
  auto c = small.pop(mem);
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->ok());
  drv.desc(1, kDataGpa + 60, 41, W);
  drv.push(0);
  c = small.pop(mem);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->error(), ChainError::kTotalLengthTooLarge);
}

// --- Indirect descriptors ----------------------------------------------------------

constexpr uint64_t kTableGpa = 0x8000;

TEST_F(VirtqueueTest, IndirectTable) {
  q.set_indirect_desc(true);
  // Table entries chain 0 -> 2 -> 1: out, in, in.
  drv.desc_at(kTableGpa + 0, kDataGpa, 16, N, 2);
  drv.desc_at(kTableGpa + 16, kDataGpa + 0x200, 300, W);
  drv.desc_at(kTableGpa + 32, kDataGpa + 0x100, 100, W | N, 1);
  drv.desc(4, kTableGpa, 48, I | W);  // WRITE on the table descriptor is ignored
  drv.push(4);
  auto c = pop_one();
  ASSERT_TRUE(c.ok()) << c.error_message();
  EXPECT_EQ(c.head(), 4);
  ASSERT_EQ(c.buffers().size(), 3u);
  EXPECT_EQ(c.readable().size(), 1u);
  EXPECT_EQ(c.writable()[0].gpa, kDataGpa + 0x100);
  EXPECT_EQ(c.writable()[1].gpa, kDataGpa + 0x200);
  EXPECT_EQ(c.readable_len(), 16u);
  EXPECT_EQ(c.writable_len(), 400u);
}

TEST_F(VirtqueueTest, DirectDescriptorsFollowedByIndirectTable) {
  q.set_indirect_desc(true);
  drv.desc_at(kTableGpa, kDataGpa + 0x100, 8, W);
  drv.desc(0, kDataGpa, 8, N, 1);
  drv.desc(1, kTableGpa, 16, I);
  drv.push(0);
  auto c = pop_one();
  ASSERT_TRUE(c.ok()) << c.error_message();
  ASSERT_EQ(c.buffers().size(), 2u);
  EXPECT_FALSE(c.buffers()[0].writable);
  EXPECT_TRUE(c.buffers()[1].writable);
}

TEST_F(VirtqueueTest, IndirectWithoutNegotiation) {
  drv.desc_at(kTableGpa, kDataGpa, 8);
  drv.desc(0, kTableGpa, 16, I);
  drv.push(0);
  EXPECT_EQ(pop_error(), ChainError::kIndirectNotNegotiated);
}

TEST_F(VirtqueueTest, NestedIndirect) {
  q.set_indirect_desc(true);
  drv.desc_at(kTableGpa, kDataGpa, 8, N, 1);
  drv.desc_at(kTableGpa + 16, kTableGpa, 32, I);
  drv.desc(0, kTableGpa, 32, I);
  drv.push(0);
  EXPECT_EQ(pop_error(), ChainError::kIndirectNested);
}

TEST_F(VirtqueueTest, IndirectWithNext) {
  q.set_indirect_desc(true);
  drv.desc_at(kTableGpa, kDataGpa, 8);
  drv.desc(0, kTableGpa, 16, I | N, 1);
  drv.desc(1, kDataGpa, 8);
  drv.push(0);
  EXPECT_EQ(pop_error(), ChainError::kIndirectWithNext);
}

TEST_F(VirtqueueTest, IndirectBadLength) {
  q.set_indirect_desc(true);
  for (uint32_t len : {0u, 8u, 17u, 40u}) {
    drv.desc(0, kTableGpa, len, I);
    drv.push(0);
    EXPECT_EQ(pop_error(), ChainError::kIndirectBadLength) << len;
  }
}

TEST_F(VirtqueueTest, IndirectTableTooLarge) {
  Queue lim(16, QueueLimits{4, UINT32_MAX});
  configure(lim, 16);
  lim.set_indirect_desc(true);
  drv.desc(0, kTableGpa, 5 * 16, I);
  drv.push(0);
  auto c = lim.pop(mem);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->error(), ChainError::kIndirectTooLarge);

  // The default limit (1024) is not tied to the queue size.
  q.set_indirect_desc(true);
  q.set_next_avail(1);
  for (uint16_t i = 0; i < 64; ++i) {
    drv.desc_at(kTableGpa + 16 * i, kDataGpa + i, 1, i < 63 ? N : 0, static_cast<uint16_t>(i + 1));
  }
  drv.desc(1, kTableGpa, 64 * 16, I);
  drv.push(1);
  auto big = pop_one();
  ASSERT_TRUE(big.ok()) << big.error_message();
  EXPECT_EQ(big.buffers().size(), 64u);
  drv.desc(1, kTableGpa, 1025 * 16, I);
  drv.push(1);
  EXPECT_EQ(pop_error(), ChainError::kIndirectTooLarge);
}

TEST_F(VirtqueueTest, IndirectTableOutsideMemory) {
  q.set_indirect_desc(true);
  drv.desc(0, kMemSize - 16, 32, I);
  drv.push(0);
  EXPECT_EQ(pop_error(), ChainError::kIndirectTableOutOfRange);
  drv.desc(0, ~uint64_t{0} - 15, 32, I);
  drv.push(0);
  EXPECT_EQ(pop_error(), ChainError::kIndirectTableOutOfRange);
}

TEST_F(VirtqueueTest, IndirectLoopAndIndexOutOfRange) {
  q.set_indirect_desc(true);
  drv.desc_at(kTableGpa, kDataGpa, 8, N, 1);
  drv.desc_at(kTableGpa + 16, kDataGpa, 8, N, 0);
  drv.desc(0, kTableGpa, 32, I);
  drv.push(0);
  EXPECT_EQ(pop_error(), ChainError::kChainTooLong);
  drv.desc_at(kTableGpa + 16, kDataGpa, 8, N, 2);  // only entries 0 and 1 exist
  drv.push(0);
  EXPECT_EQ(pop_error(), ChainError::kIndexOutOfRange);
}

TEST_F(VirtqueueTest, IndirectEntriesAreValidated) {
  q.set_indirect_desc(true);
  drv.desc_at(kTableGpa, kDataGpa, 8, W | N, 1);
  drv.desc_at(kTableGpa + 16, kDataGpa, 8);
  drv.desc(0, kTableGpa, 32, I);
  drv.push(0);
  EXPECT_EQ(pop_error(), ChainError::kReadableAfterWritable);
  drv.desc_at(kTableGpa, kMemSize - 4, 8);
  drv.desc(0, kTableGpa, 16, I);
  drv.push(0);
  EXPECT_EQ(pop_error(), ChainError::kBufferOutOfRange);
  // A writable direct descriptor followed by a table holding a readable one.
  drv.desc_at(kTableGpa, kDataGpa, 8);
  drv.desc(0, kDataGpa, 8, W | N, 1);
  drv.desc(1, kTableGpa, 16, I);
  drv.push(0);
  EXPECT_EQ(pop_error(), ChainError::kReadableAfterWritable);
}

TEST_F(VirtqueueTest, ErrorMessagesAreDistinct) {
  std::vector<std::string> seen;
  for (int e = 0; e <= static_cast<int>(ChainError::kIndirectNested); ++e) {
    std::string m = to_string(static_cast<ChainError>(e));
    EXPECT_EQ(std::count(seen.begin(), seen.end(), m), 0) << m;
    seen.push_back(m);
  }
}

// --- Completing --------------------------------------------------------------------

TEST_F(VirtqueueTest, AddUsedWritesElementThenIndex) {
  drv.desc(7, kDataGpa, 8, W);
  drv.push(7);
  auto c = pop_one();
  ASSERT_TRUE(q.add_used(mem, c.head(), 5));
  EXPECT_EQ(drv.used_idx(), 1);
  EXPECT_EQ(drv.used_id(0), 7u);
  EXPECT_EQ(drv.used_len(0), 5u);
  EXPECT_EQ(q.next_used(), 1);
  EXPECT_FALSE(q.add_used(mem, 16, 0));  // not a descriptor index
  EXPECT_EQ(drv.used_idx(), 1);
}

TEST_F(VirtqueueTest, UndoPop) {
  drv.desc(0, kDataGpa, 8);
  drv.push(0);
  ASSERT_TRUE(q.pop(mem));
  q.undo_pop();
  auto c = pop_one();
  EXPECT_EQ(c.head(), 0);
  EXPECT_FALSE(q.pop(mem));
}

// --- Notifications -----------------------------------------------------------------

TEST(VringNeedEvent, Cases) {
  // Notify when event_idx lies in [old, new) on the wrapping 16-bit axis.
  EXPECT_TRUE(vring_need_event(0, 1, 0));
  EXPECT_FALSE(vring_need_event(1, 1, 0));
  EXPECT_TRUE(vring_need_event(4, 5, 0));
  EXPECT_TRUE(vring_need_event(0, 5, 0));
  EXPECT_FALSE(vring_need_event(5, 5, 0));
  EXPECT_FALSE(vring_need_event(3, 5, 4));
  EXPECT_FALSE(vring_need_event(0, 0, 0));  // nothing new
  EXPECT_TRUE(vring_need_event(65535, 1, 65534));  // across the wrap
  EXPECT_TRUE(vring_need_event(0, 2, 65535));
  EXPECT_FALSE(vring_need_event(2, 2, 65535));
  EXPECT_FALSE(vring_need_event(65534, 2, 65535));
  EXPECT_TRUE(vring_need_event(100, 200, 50));
  EXPECT_FALSE(vring_need_event(20, 200, 50));
}

class NotifyTest : public VirtqueueTest {
 protected:
  // Pops and completes `n` single-buffer chains.
  void complete(int n) {
    for (int i = 0; i < n; ++i) {
      drv.desc(0, kDataGpa, 8, W);
      drv.push(0);
      auto c = pop_one();
      ASSERT_TRUE(q.add_used(mem, c.head(), 1));
    }
  }
};

TEST_F(NotifyTest, NoInterruptFlag) {
  complete(1);
  EXPECT_TRUE(q.needs_notification(mem));
  drv.set_avail_flags(kVirtqAvailFNoInterrupt);
  complete(1);
  EXPECT_FALSE(q.needs_notification(mem));
  drv.set_avail_flags(0);
  complete(1);
  EXPECT_TRUE(q.needs_notification(mem));
}

TEST_F(NotifyTest, EventIdxIgnoresNoInterruptFlag) {
  q.set_event_idx(true);
  drv.set_avail_flags(kVirtqAvailFNoInterrupt);
  drv.set_used_event(0);
  complete(1);
  EXPECT_TRUE(q.needs_notification(mem));
  drv.set_used_event(1);
  complete(1);
  EXPECT_TRUE(q.needs_notification(mem));
}

TEST_F(NotifyTest, UsedEventDecisions) {
  q.set_event_idx(true);
  drv.set_used_event(2);  // "tell me once you have written entry 2"
  complete(1);            // used idx 1: first call always notifies
  EXPECT_TRUE(q.needs_notification(mem));
  complete(1);  // idx 2: entry 1 written
  EXPECT_FALSE(q.needs_notification(mem));
  complete(1);  // idx 3: entry 2 written
  EXPECT_TRUE(q.needs_notification(mem));
  complete(1);  // idx 4: event already passed
  EXPECT_FALSE(q.needs_notification(mem));
  // Several completions in one batch that jump past the event.
  drv.set_used_event(5);
  complete(3);  // idx 7, entries 4..6 written, 5 among them
  EXPECT_TRUE(q.needs_notification(mem));
  drv.set_used_event(7);
  EXPECT_FALSE(q.needs_notification(mem));  // nothing new since
  complete(1);
  EXPECT_TRUE(q.needs_notification(mem));
}

TEST_F(NotifyTest, UsedEventAcrossWrap) {
  q.set_event_idx(true);
  q.set_next_avail(65534);
  q.set_next_used(65534);
  drv.set_avail_idx(65534);
  drv.set_used_event(65535);
  EXPECT_TRUE(q.needs_notification(mem));  // establishes the mark at 65534
  complete(1);                             // idx 65535: entry 65534 written
  EXPECT_FALSE(q.needs_notification(mem));
  complete(2);  // idx 1: entries 65535 and 0 written
  EXPECT_TRUE(q.needs_notification(mem));
  drv.set_used_event(1);
  complete(1);  // idx 2: entry 1
  EXPECT_TRUE(q.needs_notification(mem));
}

TEST_F(NotifyTest, DisableEnableWithoutEventIdx) {
  q.disable_notifications(mem);
  EXPECT_EQ(drv.used_flags(), kVirtqUsedFNoNotify);
  EXPECT_FALSE(q.enable_notifications(mem));
  EXPECT_EQ(drv.used_flags(), 0);
  // A buffer that arrives while notifications are off is reported.
  q.disable_notifications(mem);
  drv.desc(0, kDataGpa, 8);
  drv.push(0);
  EXPECT_TRUE(q.enable_notifications(mem));
  EXPECT_TRUE(q.pop(mem));
  EXPECT_FALSE(q.enable_notifications(mem));
}

TEST_F(NotifyTest, DisableEnableWithEventIdx) {
  q.set_event_idx(true);
  q.disable_notifications(mem);
  EXPECT_EQ(drv.used_flags(), 0);  // the flag must stay 0 with EVENT_IDX
  drv.desc(0, kDataGpa, 8);
  drv.push(0);
  drv.push(0);
  ASSERT_TRUE(q.pop(mem));
  EXPECT_EQ(drv.avail_event(), 0);  // not advanced while disabled
  EXPECT_TRUE(q.enable_notifications(mem));
  EXPECT_EQ(drv.avail_event(), 1);
  ASSERT_TRUE(q.pop(mem));
  EXPECT_FALSE(q.enable_notifications(mem));
  EXPECT_EQ(drv.avail_event(), 2);
  ASSERT_TRUE(q.set_avail_event(mem, 1234));
  EXPECT_EQ(drv.avail_event(), 1234);
}

TEST_F(NotifyTest, PopRearmsAvailEventWhenEmpty) {
  q.set_event_idx(true);
  drv.desc(0, kDataGpa, 8);
  drv.push(0);
  drv.push(0);
  drv.push(0);
  while (q.pop(mem)) {
  }
  EXPECT_EQ(drv.avail_event(), 3);  // "notify me when you add entry 3"
  // Not while the device has notifications disabled.
  q.disable_notifications(mem);
  drv.push(0);
  ASSERT_TRUE(q.pop(mem));
  EXPECT_FALSE(q.pop(mem));
  EXPECT_EQ(drv.avail_event(), 3);
}

// --- Reading and writing through a chain -----------------------------------------

TEST_F(VirtqueueTest, ReadAcrossBuffers) {
  std::vector<uint8_t> data(64);
  std::iota(data.begin(), data.end(), 0);
  ASSERT_TRUE(mem.write(kDataGpa, data.data(), 10));
  ASSERT_TRUE(mem.write(kDataGpa + 0x100, data.data() + 10, 1));
  ASSERT_TRUE(mem.write(kDataGpa + 0x200, data.data() + 11, 53));
  drv.desc(0, kDataGpa, 10, N, 1);
  drv.desc(1, kDataGpa + 0x100, 1, N, 2);
  drv.desc(2, kDataGpa + 0x200, 53, N, 3);
  drv.desc(3, kDataGpa + 0x300, 100, W);  // writable: never read
  drv.push(0);
  auto c = pop_one();
  ASSERT_TRUE(c.ok());

  std::vector<uint8_t> out(64);
  EXPECT_EQ(c.read(mem, 0, out), 64u);
  EXPECT_EQ(out, data);
  std::vector<uint8_t> part(20);
  EXPECT_EQ(c.read(mem, 5, part), 20u);
  EXPECT_TRUE(std::equal(part.begin(), part.end(), data.begin() + 5));
  // Running off the end: only what is there.
  EXPECT_EQ(c.read(mem, 60, part), 4u);
  EXPECT_TRUE(std::equal(part.begin(), part.begin() + 4, data.begin() + 60));
  EXPECT_EQ(c.read(mem, 64, part), 0u);
  EXPECT_EQ(c.read(mem, 1000, part), 0u);
  EXPECT_EQ(c.read(mem, 0, std::span<uint8_t>()), 0u);
}

TEST_F(VirtqueueTest, WriteAcrossBuffers) {
  drv.desc(0, kDataGpa, 4, N, 1);            // readable: never written
  drv.desc(1, kDataGpa + 0x100, 3, W | N, 2);
  drv.desc(2, kDataGpa + 0x200, 5, W);
  drv.push(0);
  auto c = pop_one();
  ASSERT_TRUE(c.ok());
  const std::vector<uint8_t> src = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  EXPECT_EQ(c.write(mem, 0, src), 8u);  // 3 + 5 writable bytes
  uint8_t a[3], b[5], r[4];
  ASSERT_TRUE(mem.read(kDataGpa + 0x100, a, 3));
  ASSERT_TRUE(mem.read(kDataGpa + 0x200, b, 5));
  ASSERT_TRUE(mem.read(kDataGpa, r, 4));
  EXPECT_EQ(std::vector<uint8_t>(a, a + 3), (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_EQ(std::vector<uint8_t>(b, b + 5), (std::vector<uint8_t>{4, 5, 6, 7, 8}));
  EXPECT_EQ(std::vector<uint8_t>(r, r + 4), (std::vector<uint8_t>{0, 0, 0, 0}));
  // At an offset that starts in the second buffer.
  const uint8_t tail[] = {0xaa, 0xbb};
  EXPECT_EQ(c.write(mem, 6, tail), 2u);
  ASSERT_TRUE(mem.read(kDataGpa + 0x200, b, 5));
  EXPECT_EQ(std::vector<uint8_t>(b, b + 5), (std::vector<uint8_t>{4, 5, 6, 0xaa, 0xbb}));
  EXPECT_EQ(c.write(mem, 8, tail), 0u);
}

TEST_F(VirtqueueTest, HostSpansAreZeroCopyViews) {
  drv.desc(0, kDataGpa, 4, W);
  drv.push(0);
  auto c = pop_one();
  ASSERT_TRUE(c.ok());
  std::memcpy(c.writable()[0].host.data(), "abcd", 4);
  char out[4];
  ASSERT_TRUE(mem.read(kDataGpa, out, 4));
  EXPECT_EQ(std::memcmp(out, "abcd", 4), 0);
}

}  // namespace
}  // namespace rz::virtio
