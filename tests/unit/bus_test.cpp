// Tests of the address-range map that dispatches PIO and MMIO accesses.
#include "devices/bus.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "util/error.h"

namespace rz::devices {
namespace {

// Records every access; reads return offset-derived bytes.
class RecordingDevice : public BusDevice {
 public:
  struct Access {
    bool is_write;
    uint64_t offset;
    std::vector<uint8_t> data;
  };
  void read(uint64_t offset, std::span<uint8_t> data) override {
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(0x10 + offset + i);
    accesses.push_back({false, offset, {data.begin(), data.end()}});
  }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    accesses.push_back({true, offset, {data.begin(), data.end()}});
  }
  std::vector<Access> accesses;
};

TEST(Bus, RejectsEmptyAndWrappingRanges) {
  Bus bus;
  auto dev = std::make_shared<RecordingDevice>();
  EXPECT_THROW(bus.insert(dev, 0x100, 0, "empty"), Error);
  EXPECT_THROW(bus.insert(dev, UINT64_MAX - 3, 8, "wraps"), Error);
}

TEST(Bus, RejectsOverlaps) {
  Bus bus;
  auto dev = std::make_shared<RecordingDevice>();
  bus.insert(dev, 0x100, 0x10, "a");  // [0x100, 0x110)
  EXPECT_THROW(bus.insert(dev, 0x100, 0x10, "same"), Error);
  EXPECT_THROW(bus.insert(dev, 0xf8, 0x10, "front"), Error);
  EXPECT_THROW(bus.insert(dev, 0x10f, 0x10, "back"), Error);
  EXPECT_THROW(bus.insert(dev, 0x104, 0x4, "inside"), Error);
  EXPECT_THROW(bus.insert(dev, 0x0, 0x1000, "around"), Error);
  EXPECT_NO_THROW(bus.insert(dev, 0xf0, 0x10, "before"));  // adjacent
  EXPECT_NO_THROW(bus.insert(dev, 0x110, 0x1, "after"));
  EXPECT_THROW(bus.insert(dev, 0x108, 0x10, "two"), Error);
  EXPECT_EQ(bus.name_at(0xef), "");
  EXPECT_EQ(bus.name_at(0xf0), "before");
  EXPECT_EQ(bus.name_at(0xff), "before");
  EXPECT_EQ(bus.name_at(0x100), "a");
  EXPECT_EQ(bus.name_at(0x10f), "a");
  EXPECT_EQ(bus.name_at(0x110), "after");
  EXPECT_EQ(bus.name_at(0x111), "");
}

TEST(Bus, DispatchesWithOffsetInsideRange) {
  Bus bus;
  auto a = std::make_shared<RecordingDevice>();
  auto b = std::make_shared<RecordingDevice>();
  bus.insert(a, 0x3f8, 8, "com1");
  bus.insert(b, 0xfe000000, 0x1000, "mmio");

  uint8_t v[2] = {};
  ASSERT_TRUE(bus.read(0x3fd, std::span(v, 1)));
  EXPECT_EQ(v[0], 0x10 + 5);
  const uint8_t w[2] = {0xaa, 0xbb};
  ASSERT_TRUE(bus.write(0x3fe, w));  // the last two bytes of the range
  ASSERT_TRUE(bus.write(0xfe000ffc, std::span(w, 1)));

  ASSERT_EQ(a->accesses.size(), 2u);
  EXPECT_FALSE(a->accesses[0].is_write);
  EXPECT_EQ(a->accesses[0].offset, 5u);
  EXPECT_TRUE(a->accesses[1].is_write);
  EXPECT_EQ(a->accesses[1].offset, 6u);
  EXPECT_EQ(a->accesses[1].data, (std::vector<uint8_t>{0xaa, 0xbb}));
  ASSERT_EQ(b->accesses.size(), 1u);
  EXPECT_EQ(b->accesses[0].offset, 0xffcu);
}

TEST(Bus, UnclaimedAndStraddlingAccessesTouchNoDevice) {
  Bus bus;
  auto a = std::make_shared<RecordingDevice>();
  auto b = std::make_shared<RecordingDevice>();
  bus.insert(a, 0x60, 1, "a");
  bus.insert(b, 0x61, 1, "b");

  uint8_t v[4] = {1, 2, 3, 4};
  EXPECT_FALSE(bus.read(0x50, v));  // no device at all
  EXPECT_EQ(v[0], 0xff);
  EXPECT_EQ(v[3], 0xff);

  uint8_t w[2] = {0, 0};
  EXPECT_FALSE(bus.read(0x60, w)) << "straddles two adjacent devices";
  EXPECT_EQ(w[0], 0xff);
  EXPECT_EQ(w[1], 0xff);
  EXPECT_FALSE(bus.write(0x60, w));
  EXPECT_FALSE(bus.write(0x61, w)) << "runs past the end of a range";
  EXPECT_FALSE(bus.write(0x5f, w)) << "starts before a range";
  EXPECT_TRUE(a->accesses.empty());
  EXPECT_TRUE(b->accesses.empty());

  EXPECT_TRUE(bus.write(0x61, std::span(w, 1)));
  EXPECT_EQ(b->accesses.size(), 1u);
}

TEST(Bus, EmptyBus) {
  Bus bus;
  uint8_t v = 0;
  EXPECT_FALSE(bus.read(0, std::span(&v, 1)));
  EXPECT_EQ(v, 0xff);
  EXPECT_EQ(bus.name_at(0), "");
}

}  // namespace
}  // namespace rz::devices
