// MSI-X: capability layout, table/PBA accesses, masking, pending bits,
// delivery on unmask, and the route-change hook.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <thread>
#include <tuple>
#include <vector>

#include "pci/config_space.h"
#include "pci/msix.h"
#include "pci/pci_device.h"
#include "util/error.h"

namespace rz::pci {
namespace {

struct Delivered {
  uint16_t vector;
  MsiMessage msg;
  bool operator==(const Delivered&) const = default;
};
struct Route {
  uint16_t vector;
  MsiMessage msg;
  bool masked;
  bool operator==(const Route&) const = default;
};

// A table with its callbacks recorded.
struct Harness {
  explicit Harness(uint16_t n) : table(n) {
    table.set_deliver([this](uint16_t v, const MsiMessage& m) { delivered.push_back({v, m}); });
    table.set_route_handler(
        [this](uint16_t v, const MsiMessage& m, bool masked) { routes.push_back({v, m, masked}); });
  }
  void w32(uint64_t off, uint32_t v) {
    std::array<uint8_t, 4> b{};
    for (int i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    table.table_write(off, b);
  }
  void w64(uint64_t off, uint64_t v) {
    std::array<uint8_t, 8> b{};
    for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    table.table_write(off, b);
  }
  uint64_t r(uint64_t off, size_t n) {
    std::array<uint8_t, 8> b{};
    table.table_read(off, std::span<uint8_t>(b.data(), n));
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t{b[i]} << (8 * i);
    return v;
  }
  uint64_t pba(uint64_t off, size_t n) {
    std::array<uint8_t, 8> b{};
    table.pba_read(off, std::span<uint8_t>(b.data(), n));
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t{b[i]} << (8 * i);
    return v;
  }
  // Programs vector v (address, data) and unmasks it.
  void program(uint16_t v, uint64_t addr, uint32_t data, bool unmask = true) {
    w64(v * 16, addr);
    w32(v * 16 + 8, data);
    if (unmask) w32(v * 16 + 12, 0);
  }

  MsixTable table;
  std::vector<Delivered> delivered;
  std::vector<Route> routes;
};

constexpr uint16_t kEnable = kMsixControlEnable;
constexpr uint16_t kFnMask = kMsixControlFunctionMask;

TEST(MsixCapability, Layout) {
  const MsixCapability c = make_msix_capability(64, 2, 0x2000, 2, 0x3000);
  EXPECT_EQ(c.bytes[0], kCapIdMsix);
  EXPECT_EQ(c.bytes[2] | (c.bytes[3] << 8), 63);
  EXPECT_EQ(c.bytes[4] | (c.bytes[5] << 8) | (c.bytes[6] << 16) | (c.bytes[7] << 24), 0x2002);
  EXPECT_EQ(c.bytes[8] | (c.bytes[9] << 8) | (c.bytes[10] << 16) | (c.bytes[11] << 24), 0x3002);
  for (size_t i = 0; i < c.writable.size(); ++i)
    EXPECT_EQ(c.writable[i], i == 3 ? 0xc0 : 0x00) << i;
  EXPECT_THROW(make_msix_capability(0, 0, 0, 0, 0), Error);
  EXPECT_THROW(make_msix_capability(2049, 0, 0, 0, 0), Error);
  EXPECT_THROW(make_msix_capability(1, 6, 0, 0, 0), Error);
  EXPECT_THROW(make_msix_capability(1, 0, 4, 0, 0), Error);
  EXPECT_THROW(MsixTable(0), Error);
  EXPECT_THROW(MsixTable(2049), Error);
}

TEST(MsixTable, ResetState) {
  Harness h(3);
  EXPECT_EQ(h.table.vectors(), 3);
  EXPECT_EQ(h.table.table_bytes(), 48u);
  EXPECT_EQ(h.table.pba_bytes(), 8u);
  EXPECT_FALSE(h.table.enabled());
  EXPECT_FALSE(h.table.function_masked());
  for (uint16_t v = 0; v < 3; ++v) {
    EXPECT_TRUE(h.table.vector_masked(v));
    EXPECT_EQ(h.r(v * 16 + 12, 4), 1u);
    EXPECT_EQ(h.r(v * 16, 8), 0u);
  }
  EXPECT_EQ(MsixTable(65).pba_bytes(), 16u);
  EXPECT_EQ(MsixTable(2048).pba_bytes(), 256u);
}

TEST(MsixTable, TableAccessSizesAndAlignment) {
  Harness h(2);
  h.w32(0x0, 0xfee01000);
  h.w32(0x4, 0x1);
  h.w32(0x8, 0x4041);
  EXPECT_EQ(h.r(0x0, 4), 0xfee01000u);
  EXPECT_EQ(h.r(0x4, 4), 0x1u);
  EXPECT_EQ(h.r(0x0, 8), 0x1'fee01000ull);
  EXPECT_EQ(h.r(0x8, 8), 0x1'00004041ull);  // data + vector control (masked)
  EXPECT_EQ(h.table.message(0), (MsiMessage{0x1'fee01000ull, 0x4041}));

  h.w64(0x10, 0x00000000'fee02000ull);
  h.w64(0x18, 0x00000000'00000051ull);  // data 0x51, vector control 0: unmask
  EXPECT_EQ(h.table.message(1), (MsiMessage{0xfee02000, 0x51}));
  EXPECT_FALSE(h.table.vector_masked(1));

  // Not honoured: 1- and 2-byte accesses, misaligned ones, 8 bytes at +4.
  const std::array<uint8_t, 2> two{0xaa, 0xbb};
  h.table.table_write(0x10, two);
  const std::array<uint8_t, 1> one{0xcc};
  h.table.table_write(0x10, one);
  h.w32(0x12, 0x12345678);
  h.w64(0x14, ~0ull);
  EXPECT_EQ(h.table.message(1), (MsiMessage{0xfee02000, 0x51}));
  EXPECT_EQ(h.r(0x10, 2), 0xffffu);
  EXPECT_EQ(h.r(0x10, 1), 0xffu);
  EXPECT_EQ(h.r(0x12, 4), 0xffffffffu);
  EXPECT_EQ(h.r(0x14, 8), ~0ull);

  // Reserved vector control bits read as zero.
  h.w32(0x1c, 0xfffffffe);
  EXPECT_EQ(h.r(0x1c, 4), 0u);
  h.w32(0x1c, 0xffffffff);
  EXPECT_EQ(h.r(0x1c, 4), 1u);
}

TEST(MsixTable, TableBoundsAreChecked) {
  Harness h(2);
  h.w32(0x20, 0x1234);  // vector 2 does not exist
  h.w64(0x28, 0);
  EXPECT_EQ(h.r(0x20, 4), 0xffffffffu);
  EXPECT_EQ(h.r(0x28, 8), ~0ull);
  EXPECT_EQ(h.r(~0ull & ~7ull, 8), ~0ull);
  EXPECT_TRUE(h.routes.empty());
  h.table.notify(2);
  h.table.notify(0xffff);  // virtio's "no vector"
  EXPECT_TRUE(h.delivered.empty());
  EXPECT_FALSE(h.table.pending(2));
  EXPECT_EQ(h.table.message(7), MsiMessage{});
  EXPECT_TRUE(h.table.vector_masked(7));
}

TEST(MsixTable, DeliversWhenEnabledAndUnmasked) {
  Harness h(4);
  h.program(1, 0xfee00000, 0x31);
  h.table.set_message_control(kEnable);
  h.table.notify(1);
  ASSERT_EQ(h.delivered.size(), 1u);
  EXPECT_EQ(h.delivered[0], (Delivered{1, {0xfee00000, 0x31}}));
  EXPECT_FALSE(h.table.pending(1));
}

TEST(MsixTable, MaskedVectorPendsAndUnmaskDelivers) {
  Harness h(4);
  h.program(2, 0xfee00000, 0x42, /*unmask=*/false);
  h.table.set_message_control(kEnable);
  h.table.notify(2);
  h.table.notify(2);  // coalesces into one pending bit
  EXPECT_TRUE(h.delivered.empty());
  EXPECT_TRUE(h.table.pending(2));
  EXPECT_EQ(h.pba(0, 8), 0x4u);
  EXPECT_EQ(h.pba(0, 4), 0x4u);

  h.w32(2 * 16 + 12, 0);  // unmask
  ASSERT_EQ(h.delivered.size(), 1u);
  EXPECT_EQ(h.delivered[0], (Delivered{2, {0xfee00000, 0x42}}));
  EXPECT_FALSE(h.table.pending(2));
  EXPECT_EQ(h.pba(0, 8), 0u);

  // Unmasking with nothing pending delivers nothing.
  h.w32(2 * 16 + 12, 1);
  h.w32(2 * 16 + 12, 0);
  EXPECT_EQ(h.delivered.size(), 1u);
}

TEST(MsixTable, FunctionMask) {
  Harness h(4);
  h.program(0, 0xfee00000, 0x20);
  h.program(3, 0xfee00000, 0x23);
  h.program(1, 0xfee00000, 0x21, /*unmask=*/false);
  h.table.set_message_control(kEnable | kFnMask);
  EXPECT_TRUE(h.table.function_masked());
  h.table.notify(0);
  h.table.notify(1);
  h.table.notify(3);
  EXPECT_TRUE(h.delivered.empty());
  EXPECT_EQ(h.pba(0, 8), 0xbu);

  // Unmasking a vector while the function is masked delivers nothing.
  h.w32(0 * 16 + 12, 1);
  h.w32(0 * 16 + 12, 0);
  EXPECT_TRUE(h.delivered.empty());

  // Clearing the function mask delivers the pending, unmasked vectors.
  h.table.set_message_control(kEnable);
  ASSERT_EQ(h.delivered.size(), 2u);
  EXPECT_EQ(h.delivered[0].vector, 0);
  EXPECT_EQ(h.delivered[1].vector, 3);
  EXPECT_EQ(h.pba(0, 8), 0x2u);  // vector 1 still masked and pending
  h.w32(1 * 16 + 12, 0);
  ASSERT_EQ(h.delivered.size(), 3u);
  EXPECT_EQ(h.delivered[2], (Delivered{1, {0xfee00000, 0x21}}));
}

TEST(MsixTable, DisabledPendsUntilEnabled) {
  Harness h(2);
  h.program(0, 0xfee00000, 0x30);
  h.table.notify(0);
  EXPECT_TRUE(h.delivered.empty());
  EXPECT_TRUE(h.table.pending(0));
  h.table.set_message_control(kEnable);
  ASSERT_EQ(h.delivered.size(), 1u);
  EXPECT_FALSE(h.table.pending(0));
  h.table.set_message_control(0);
  EXPECT_FALSE(h.table.enabled());
}

TEST(MsixTable, PbaAccesses) {
  Harness h(100);
  h.table.set_message_control(kEnable);
  h.table.notify(0);
  h.table.notify(63);
  h.table.notify(64);
  h.table.notify(99);
  EXPECT_EQ(h.pba(0, 8), 0x80000000'00000001ull);
  EXPECT_EQ(h.pba(0, 4), 0x1u);
  EXPECT_EQ(h.pba(4, 4), 0x80000000u);
  EXPECT_EQ(h.pba(8, 8), (1ull << 0) | (1ull << 35));
  EXPECT_EQ(h.pba(12, 4), 1u << 3);
  EXPECT_EQ(h.pba(16, 8), ~0ull);  // past the end
  EXPECT_EQ(h.pba(2, 4), 0xffffffffu);
  EXPECT_EQ(h.pba(4, 8), ~0ull);
  EXPECT_EQ(h.pba(0, 2), 0xffffu);
  const std::array<uint8_t, 8> zeros{};
  h.table.pba_write(0, zeros);  // read-only
  EXPECT_EQ(h.pba(0, 8), 0x80000000'00000001ull);
}

TEST(MsixTable, RouteHook) {
  Harness h(2);
  h.w32(0x0, 0xfee00000);
  ASSERT_EQ(h.routes.size(), 1u);
  EXPECT_EQ(h.routes[0], (Route{0, {0xfee00000, 0}, true}));
  h.w32(0x0, 0xfee00000);  // no change: no call
  EXPECT_EQ(h.routes.size(), 1u);
  h.w32(0x8, 0x41);
  ASSERT_EQ(h.routes.size(), 2u);
  EXPECT_EQ(h.routes[1], (Route{0, {0xfee00000, 0x41}, true}));
  h.w32(0xc, 0);  // vector unmasked, but MSI-X is still disabled
  EXPECT_EQ(h.routes.size(), 2u);

  // Enabling unmasks vector 0 only (vector 1 is still masked).
  h.table.set_message_control(kEnable);
  ASSERT_EQ(h.routes.size(), 3u);
  EXPECT_EQ(h.routes[2], (Route{0, {0xfee00000, 0x41}, false}));
  h.table.set_message_control(kEnable);  // no change
  EXPECT_EQ(h.routes.size(), 3u);

  // Reprogramming a live vector.
  h.w64(0x0, 0x0000'0000'fee01000ull);
  ASSERT_EQ(h.routes.size(), 4u);
  EXPECT_EQ(h.routes[3], (Route{0, {0xfee01000, 0x41}, false}));

  // Vector mask, function mask, disable.
  h.w32(0xc, 1);
  EXPECT_EQ(h.routes.back(), (Route{0, {0xfee01000, 0x41}, true}));
  h.w32(0xc, 0);
  EXPECT_EQ(h.routes.back(), (Route{0, {0xfee01000, 0x41}, false}));
  const size_t before = h.routes.size();
  h.table.set_message_control(kEnable | kFnMask);
  ASSERT_EQ(h.routes.size(), before + 1);
  EXPECT_TRUE(h.routes.back().masked);
  h.table.set_message_control(kEnable);
  ASSERT_EQ(h.routes.size(), before + 2);
  EXPECT_FALSE(h.routes.back().masked);
  h.table.set_message_control(0);
  ASSERT_EQ(h.routes.size(), before + 3);
  EXPECT_EQ(h.routes.back(), (Route{0, {0xfee01000, 0x41}, true}));

  // Ignored accesses change nothing.
  const std::array<uint8_t, 2> two{};
  h.table.table_write(0x0, two);
  h.w32(0x40, 0);
  EXPECT_EQ(h.routes.size(), before + 3);
}

TEST(MsixTable, RouteUpdatePrecedesPendingDelivery) {
  Harness h(1);
  std::vector<char> order;
  h.table.set_deliver([&](uint16_t, const MsiMessage&) { order.push_back('d'); });
  h.table.set_route_handler([&](uint16_t, const MsiMessage&, bool) { order.push_back('r'); });
  h.program(0, 0xfee00000, 0x30, false);
  h.table.set_message_control(kEnable);
  order.clear();
  h.table.notify(0);
  h.w32(0xc, 0);
  EXPECT_EQ(order, (std::vector<char>{'r', 'd'}));
}

TEST(MsixTable, ConcurrentNotifyAndMaskToggling) {
  MsixTable t(8);
  std::atomic<int> delivered{0};
  t.set_deliver([&](uint16_t, const MsiMessage&) { ++delivered; });
  t.set_message_control(kEnable);
  std::atomic<bool> stop{false}, started{false};
  std::thread dev([&] {
    started = true;
    while (!stop)
      for (uint16_t v = 0; v < 8; ++v) t.notify(v);
  });
  // The toggling must overlap the notifications: wait for the thread to run.
  while (!started) std::this_thread::yield();
  const std::array<uint8_t, 4> unmask{0, 0, 0, 0}, mask{1, 0, 0, 0};
  for (int i = 0; i < 5000; ++i) {
    t.table_write((i % 8) * 16 + 12, (i / 8) % 2 ? mask : unmask);
    t.set_message_control(i % 3 ? kEnable : (kEnable | kFnMask));
  }
  // All unmasked again: notifications (and pending ones) get through.
  for (uint16_t v = 0; v < 8; ++v) t.table_write(v * 16 + 12, unmask);
  t.set_message_control(kEnable);
  const int before = delivered.load();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (delivered.load() == before && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  stop = true;
  dev.join();
  EXPECT_GT(delivered.load(), before);
}

// --- Through a PciDevice: capability in config space, table in a BAR ---------------

class MsixDevice : public PciDevice {
 public:
  MsixDevice() : PciDevice(make_config()) { add_msix(4, 1, 0x0, 0x800); }
  static PciConfigSpace make_config() {
    PciConfigSpace c(PciHeader{.vendor_id = 0x1af4, .device_id = 0x1041, .class_code = 0x020000});
    const std::array<uint8_t, 4> vendor_cap{0x09, 0, 4, 0};
    c.add_capability(vendor_cap);
    c.add_bar(1, BarType::Mem32, 0x1000);
    return c;
  }
  using PciDevice::add_msix;
};

TEST(MsixDevice, CapabilityAndTableThroughTheDevice) {
  MsixDevice d;
  ASSERT_NE(d.msix(), nullptr);
  const std::optional<uint8_t> cap =
      d.with_config([](const PciConfigSpace& c) { return c.find_capability(kCapIdMsix); });
  ASSERT_TRUE(cap);
  EXPECT_EQ(*cap, 0x44);
  EXPECT_EQ(d.config_read(*cap + 2, 2), 3u);              // table size N-1
  EXPECT_EQ(d.config_read(*cap + 4, 4), 0x0u | 1u);       // offset 0, BIR 1
  EXPECT_EQ(d.config_read(*cap + 8, 4), 0x800u | 1u);     // PBA at 0x800, BIR 1

  std::vector<Delivered> delivered;
  d.msix()->set_deliver([&](uint16_t v, const MsiMessage& m) { delivered.push_back({v, m}); });

  // The guest programs vector 2 through BAR1 and enables MSI-X in config space.
  auto w32 = [&](uint64_t off, uint32_t v) {
    std::array<uint8_t, 4> b{};
    for (int i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    d.bar_write(1, off, b);
  };
  w32(2 * 16 + 0, 0xfee00000);
  w32(2 * 16 + 8, 0x55);
  w32(2 * 16 + 12, 0);
  EXPECT_EQ(d.msix()->message(2), (MsiMessage{0xfee00000, 0x55}));

  d.config_write(*cap + 2, 2, 0xffff);  // only enable + function mask stick
  EXPECT_EQ(d.config_read(*cap + 2, 2), 0xc003u);
  EXPECT_TRUE(d.msix()->enabled());
  EXPECT_TRUE(d.msix()->function_masked());
  d.msix()->notify(2);
  EXPECT_TRUE(delivered.empty());
  std::array<uint8_t, 8> pba{};
  d.bar_read(1, 0x800, pba);
  EXPECT_EQ(pba[0], 0x4);

  // A dword write covering the capability header unmasks the function.
  d.config_write(*cap, 4, 0x80000000u | 0xffffu);
  EXPECT_FALSE(d.msix()->function_masked());
  ASSERT_EQ(delivered.size(), 1u);
  EXPECT_EQ(delivered[0].vector, 2);
  // A byte write to the high byte of Message Control disables it.
  d.config_write(*cap + 3, 1, 0x00);
  EXPECT_FALSE(d.msix()->enabled());

  // Outside the table and PBA the BAR belongs to the device (all-ones here).
  std::array<uint8_t, 4> b{};
  d.bar_read(1, 0x400, b);
  EXPECT_EQ(b, (std::array<uint8_t, 4>{0xff, 0xff, 0xff, 0xff}));
  d.bar_read(1, 0x40, b);  // past the 4-entry table
  EXPECT_EQ(b, (std::array<uint8_t, 4>{0xff, 0xff, 0xff, 0xff}));
}

TEST(MsixDevice, AddMsixValidatesLayout) {
  MsixDevice d;
  EXPECT_THROW(d.add_msix(4, 1, 0, 0x800), Error);  // twice
  struct Bare : PciDevice {
    Bare() : PciDevice(PciConfigSpace(PciHeader{})) {
      with_config([](PciConfigSpace& c) {
        c.add_bar(0, BarType::Mem32, 0x100);
        c.add_bar(1, BarType::Io, 0x10);
      });
    }
    using PciDevice::add_msix;
  };
  EXPECT_THROW(Bare().add_msix(4, 2, 0, 0x80), Error);     // no such BAR
  EXPECT_THROW(Bare().add_msix(4, 1, 0, 0x80), Error);     // I/O BAR
  EXPECT_THROW(Bare().add_msix(16, 0, 0, 0x80), Error);    // table overlaps PBA
  EXPECT_THROW(Bare().add_msix(4, 0, 0, 0x100), Error);    // PBA past the end
  EXPECT_NO_THROW(Bare().add_msix(8, 0, 0, 0x80));
}

}  // namespace
}  // namespace rz::pci
