// PCI config space, BARs, host bridge access paths, BAR allocation and the
// Bus range removal that BAR remapping relies on.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "devices/bus.h"
#include "pci/bar_allocator.h"
#include "pci/bar_mapper.h"
#include "pci/config_space.h"
#include "pci/pci_bus.h"
#include "pci/pci_device.h"
#include "util/error.h"

namespace rz::pci {
namespace {

PciHeader test_header() {
  PciHeader h;
  h.vendor_id = 0x1af4;
  h.device_id = 0x1042;
  h.class_code = 0x010000;
  h.revision = 1;
  h.subsystem_vendor_id = 0x1af4;
  h.subsystem_id = 0x0002;
  h.interrupt_pin = 1;
  return h;
}

// A device whose regions remember the last access.
class TestDevice : public PciDevice {
 public:
  explicit TestDevice(PciConfigSpace cfg) : PciDevice(std::move(cfg)) {}

  uint8_t last_bar = 0xff;
  uint64_t last_offset = 0;
  std::vector<uint8_t> last_written;

 protected:
  void region_read(uint8_t bar, uint64_t offset, std::span<uint8_t> data) override {
    last_bar = bar;
    last_offset = offset;
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(0xa0 + bar + i);
  }
  void region_write(uint8_t bar, uint64_t offset, std::span<const uint8_t> data) override {
    last_bar = bar;
    last_offset = offset;
    last_written.assign(data.begin(), data.end());
  }
};

std::shared_ptr<TestDevice> make_device() {
  PciConfigSpace cfg(test_header());
  cfg.add_bar(0, BarType::Mem32, 0x1000);
  cfg.add_bar(1, BarType::Io, 0x20);
  cfg.add_bar(2, BarType::Mem64, 0x4000, /*prefetchable=*/true);
  return std::make_shared<TestDevice>(std::move(cfg));
}

// --- Config space ---------------------------------------------------------------

TEST(PciConfigSpace, HeaderFieldsAreReadOnly) {
  PciConfigSpace c(test_header());
  EXPECT_EQ(c.read(kCfgVendorId, 4), 0x10421af4u);
  EXPECT_EQ(c.read(kCfgRevision, 4), 0x01000001u);  // class 01 00 00, revision 1
  EXPECT_EQ(c.read(kCfgHeaderType, 1), 0u);
  EXPECT_EQ(c.read(kCfgSubsystemVendorId, 4), 0x00021af4u);
  EXPECT_EQ(c.read(kCfgInterruptPin, 1), 1u);

  c.write(kCfgVendorId, 4, 0xdeadbeef);
  c.write(kCfgRevision, 4, 0xffffffff);
  c.write(kCfgHeaderType, 1, 0x80);
  c.write(kCfgSubsystemVendorId, 4, 0);
  c.write(kCfgInterruptPin, 1, 4);
  c.write(kCfgCapabilityPtr, 1, 0x40);
  c.write(kCfgRomBar, 4, 0xffffffff);
  EXPECT_EQ(c.read(kCfgVendorId, 4), 0x10421af4u);
  EXPECT_EQ(c.read(kCfgRevision, 4), 0x01000001u);
  EXPECT_EQ(c.read(kCfgHeaderType, 1), 0u);
  EXPECT_EQ(c.read(kCfgSubsystemVendorId, 4), 0x00021af4u);
  EXPECT_EQ(c.read(kCfgInterruptPin, 1), 1u);
  EXPECT_EQ(c.read(kCfgCapabilityPtr, 1), 0u);
  EXPECT_EQ(c.read(kCfgRomBar, 4), 0u);  // no expansion ROM

  // Interrupt line and cache line size are plain read/write registers.
  c.write(kCfgInterruptLine, 1, 11);
  EXPECT_EQ(c.interrupt_line(), 11);
  c.write(kCfgCacheLineSize, 1, 0x10);
  EXPECT_EQ(c.read(kCfgCacheLineSize, 1), 0x10u);
}

TEST(PciConfigSpace, CommandAndStatus) {
  PciConfigSpace c(test_header());
  EXPECT_FALSE(c.memory_enabled());
  EXPECT_FALSE(c.io_enabled());
  c.write(kCfgCommand, 2, 0xffff);
  EXPECT_EQ(c.command(), 0x0547);  // reserved / unsupported bits stay 0
  EXPECT_TRUE(c.memory_enabled());
  EXPECT_TRUE(c.io_enabled());
  EXPECT_TRUE(c.bus_master_enabled());
  EXPECT_TRUE(c.intx_disabled());
  c.write(kCfgCommand, 2, kCommandMemory);
  EXPECT_TRUE(c.memory_enabled());
  EXPECT_FALSE(c.io_enabled());
  EXPECT_FALSE(c.bus_master_enabled());

  // Status: error bits are write-1-to-clear, the rest read-only.
  c.poke(kCfgStatus, 2, 0x8000 | 0x0100 | kStatusInterrupt);
  c.write(kCfgStatus, 2, 0x0000);
  EXPECT_EQ(c.status(), 0x8000 | 0x0100 | kStatusInterrupt);
  c.write(kCfgStatus, 2, 0x8000 | kStatusInterrupt);
  EXPECT_EQ(c.status(), 0x0100 | kStatusInterrupt);
  // A dword write to the command register writes status too: 1s clear.
  c.write(kCfgCommand, 4, 0x0100'0000u | kCommandIo);
  EXPECT_EQ(c.status(), kStatusInterrupt);
  EXPECT_EQ(c.command(), kCommandIo);
  c.set_interrupt_status(false);
  EXPECT_EQ(c.status(), 0);
}

TEST(PciConfigSpace, MisalignedAndOutOfRangeAccesses) {
  PciConfigSpace c(test_header());
  c.write(kCfgCommand, 2, kCommandMemory);
  EXPECT_EQ(c.read(0x01, 2), 0xffffffffu);  // word not word-aligned
  EXPECT_EQ(c.read(0x02, 4), 0xffffffffu);  // dword not dword-aligned
  EXPECT_EQ(c.read(0x00, 3), 0xffffffffu);
  EXPECT_EQ(c.read(0x00, 8), 0xffffffffu);
  EXPECT_EQ(c.read(0x100, 4), 0xffffffffu);  // beyond 256 bytes
  EXPECT_EQ(c.read(0xfe, 2), 0u);            // last word is fine
  c.write(0x03, 2, 0);                        // misaligned: ignored
  c.write(0x04, 3, 0);
  EXPECT_EQ(c.command(), kCommandMemory);
  EXPECT_THROW(c.poke(0x01, 4, 0), Error);

  PciConfigSpace e(test_header(), /*extended=*/true);
  EXPECT_EQ(e.size(), 4096u);
  EXPECT_EQ(e.read(0x100, 4), 0u);  // no extended capabilities
  EXPECT_EQ(e.read(0xffc, 4), 0u);
  EXPECT_EQ(e.read(0x1000, 4), 0xffffffffu);
  e.write(0x100, 4, 0x12345678);
  EXPECT_EQ(e.read(0x100, 4), 0u);
}

TEST(PciConfigSpace, ByteAndWordReadsSliceTheDword) {
  PciConfigSpace c(test_header());
  EXPECT_EQ(c.read(0, 1), 0xf4u);
  EXPECT_EQ(c.read(1, 1), 0x1au);
  EXPECT_EQ(c.read(2, 2), 0x1042u);
  EXPECT_EQ(c.read(3, 1), 0x10u);
}

TEST(PciConfigSpace, Bar32Sizing) {
  PciConfigSpace c(test_header());
  c.add_bar(0, BarType::Mem32, 0x1000);
  c.add_bar(1, BarType::Mem32, 0x100000, /*prefetchable=*/true);
  EXPECT_EQ(c.read(kCfgBar0, 4), 0u);
  EXPECT_EQ(c.read(kCfgBar0 + 4, 4), 0x8u);  // prefetchable flag
  c.write(kCfgBar0, 4, 0xffffffff);
  EXPECT_EQ(c.read(kCfgBar0, 4), 0xfffff000u);
  c.write(kCfgBar0 + 4, 4, 0xffffffff);
  EXPECT_EQ(c.read(kCfgBar0 + 4, 4), 0xfff00008u);
  // Restore an address: the low bits within the size are not writable.
  c.write(kCfgBar0, 4, 0xc0001234);
  EXPECT_EQ(c.read(kCfgBar0, 4), 0xc0001000u);
  ASSERT_TRUE(c.bar(0));
  EXPECT_EQ(c.bar(0)->address, 0xc0001000u);
  EXPECT_EQ(c.bar(0)->size, 0x1000u);
  EXPECT_TRUE(c.bar(1)->prefetchable);
}

TEST(PciConfigSpace, Bar64Sizing) {
  PciConfigSpace c(test_header());
  c.add_bar(2, BarType::Mem64, 0x4000);
  c.add_bar(4, BarType::Mem64, 8ull << 30, /*prefetchable=*/true);
  EXPECT_EQ(c.read(kCfgBar0 + 8, 4), 0x4u);   // 64-bit type
  EXPECT_EQ(c.read(kCfgBar0 + 16, 4), 0xcu);  // 64-bit, prefetchable
  c.write(kCfgBar0 + 8, 4, 0xffffffff);
  c.write(kCfgBar0 + 12, 4, 0xffffffff);
  EXPECT_EQ(c.read(kCfgBar0 + 8, 4), 0xffffc004u);
  EXPECT_EQ(c.read(kCfgBar0 + 12, 4), 0xffffffffu);
  // 8 GiB: the size shows in the high dword.
  c.write(kCfgBar0 + 16, 4, 0xffffffff);
  c.write(kCfgBar0 + 20, 4, 0xffffffff);
  EXPECT_EQ(c.read(kCfgBar0 + 16, 4), 0x0000000cu);
  EXPECT_EQ(c.read(kCfgBar0 + 20, 4), 0xfffffffeu);

  c.write(kCfgBar0 + 8, 4, 0x80000000);
  c.write(kCfgBar0 + 12, 4, 0x1);
  EXPECT_EQ(c.bar(2)->address, 0x1'8000'0000ull);
  EXPECT_EQ(c.bar(2)->type, BarType::Mem64);
  EXPECT_FALSE(c.bar(3));  // the upper half is not a BAR of its own
  EXPECT_EQ(c.bars().size(), 2u);

  c.set_bar_address(4, 0x40'0000'0000ull);
  EXPECT_EQ(c.read(kCfgBar0 + 16, 4), 0x0000000cu);
  EXPECT_EQ(c.read(kCfgBar0 + 20, 4), 0x40u);
}

TEST(PciConfigSpace, IoBarSizing) {
  PciConfigSpace c(test_header());
  c.add_bar(5, BarType::Io, 0x20);
  EXPECT_EQ(c.read(kCfgBar0 + 20, 4), 0x1u);
  c.write(kCfgBar0 + 20, 4, 0xffffffff);
  EXPECT_EQ(c.read(kCfgBar0 + 20, 4), 0xffffffe1u);
  c.write(kCfgBar0 + 20, 4, 0x1000);
  EXPECT_EQ(c.read(kCfgBar0 + 20, 4), 0x1001u);
  EXPECT_EQ(c.bar(5)->address, 0x1000u);
}

TEST(PciConfigSpace, UnusedBarsReadZero) {
  PciConfigSpace c(test_header());
  c.add_bar(0, BarType::Mem32, 0x1000);
  for (uint16_t off = kCfgBar0 + 4; off < kCfgBar0 + 24; off += 4) {
    c.write(off, 4, 0xffffffff);
    EXPECT_EQ(c.read(off, 4), 0u) << off;
  }
}

TEST(PciConfigSpace, BarMisuseThrows) {
  PciConfigSpace c(test_header());
  EXPECT_THROW(c.add_bar(6, BarType::Mem32, 0x1000), Error);
  EXPECT_THROW(c.add_bar(5, BarType::Mem64, 0x1000), Error);  // no room for the high half
  EXPECT_THROW(c.add_bar(0, BarType::Mem32, 0x1800), Error);  // not a power of two
  EXPECT_THROW(c.add_bar(0, BarType::Mem32, 8), Error);
  EXPECT_THROW(c.add_bar(0, BarType::Io, 512), Error);
  EXPECT_THROW(c.add_bar(0, BarType::Io, 16, true), Error);
  c.add_bar(0, BarType::Mem64, 0x1000);
  EXPECT_THROW(c.add_bar(1, BarType::Mem32, 0x1000), Error);
  EXPECT_THROW(c.add_bar(0, BarType::Mem32, 0x1000), Error);
  EXPECT_THROW(c.set_bar_address(1, 0), Error);
  EXPECT_THROW(c.set_bar_address(2, 0), Error);
  EXPECT_THROW(c.set_bar_address(0, 0x800), Error);  // misaligned
  c.add_bar(2, BarType::Io, 0x10);
  EXPECT_THROW(c.set_bar_address(2, 0x10000), Error);
  c.add_bar(3, BarType::Mem32, 0x1000);
  EXPECT_THROW(c.set_bar_address(3, 1ull << 32), Error);
  EXPECT_THROW(PciConfigSpace(PciHeader{.interrupt_pin = 5}), Error);
}

TEST(PciConfigSpace, CapabilityList) {
  PciConfigSpace c(test_header());
  EXPECT_EQ(c.status() & kStatusCapabilityList, 0);
  EXPECT_FALSE(c.find_capability(0x09));

  const std::array<uint8_t, 6> vendor{0x09, 0xee, 6, 0x11, 0x22, 0x33};
  const std::array<uint8_t, 6> vendor_mask{0xff, 0xff, 0x00, 0xff, 0x0f, 0x00};
  const uint8_t a = c.add_capability(vendor, vendor_mask);
  const std::array<uint8_t, 3> other{0x05, 0, 0x77};
  const uint8_t b = c.add_capability(other);
  const uint8_t d = c.add_capability(vendor);

  EXPECT_EQ(a, 0x40);
  EXPECT_EQ(b, 0x48);  // dword-aligned after 6 bytes
  EXPECT_EQ(d, 0x4c);
  EXPECT_NE(c.status() & kStatusCapabilityList, 0);
  EXPECT_EQ(c.read(kCfgCapabilityPtr, 1), 0x40u);
  EXPECT_EQ(c.read(a + 1, 1), b);
  EXPECT_EQ(c.read(b + 1, 1), d);
  EXPECT_EQ(c.read(d + 1, 1), 0u);
  EXPECT_EQ(c.find_capability(0x09), a);  // the first of two
  EXPECT_EQ(c.find_capability(0x05), b);
  EXPECT_FALSE(c.find_capability(0x10));

  // Guest-writable bits: only those in the mask; id and next never.
  c.write(a, 4, 0xffffffff);
  EXPECT_EQ(c.read(a, 4), 0xff060000u | (static_cast<uint32_t>(b) << 8) | 0x09u);
  c.write(a + 4, 1, 0xff);
  EXPECT_EQ(c.read(a + 4, 1), 0x2fu);
  c.write(a + 5, 1, 0xff);
  EXPECT_EQ(c.read(a + 5, 1), 0x33u);
  c.write(b + 2, 1, 0);
  EXPECT_EQ(c.read(b + 2, 1), 0x77u);
}

TEST(PciConfigSpace, CapabilityErrors) {
  PciConfigSpace c(test_header());
  const std::array<uint8_t, 1> tiny{0x09};
  EXPECT_THROW(c.add_capability(tiny), Error);
  const std::array<uint8_t, 4> body{0x09, 0, 0, 0};
  const std::array<uint8_t, 3> short_mask{};
  EXPECT_THROW(c.add_capability(body, short_mask), Error);
  std::vector<uint8_t> big(0xc0, 0);
  big[0] = 0x09;
  c.add_capability(big);  // 0x40..0xff exactly
  EXPECT_THROW(c.add_capability(body), Error);
}

TEST(PciConfigSpace, CorruptListWalkTerminates) {
  PciConfigSpace c(test_header());
  const std::array<uint8_t, 4> cap{0x09, 0, 0, 0};
  const uint8_t a = c.add_capability(cap);
  c.poke(a + 1, 1, a);  // points at itself
  EXPECT_FALSE(c.find_capability(0x10));
  EXPECT_EQ(c.find_capability(0x09), a);
}

// --- PciDevice: BAR decoding and move reports ------------------------------------

TEST(PciDevice, BarMovesFollowCommandAndAddress) {
  auto dev = make_device();
  std::vector<BarMove> moves;
  dev->set_bar_move_handler([&](const BarMove& m) { moves.push_back(m); });
  EXPECT_TRUE(moves.empty());

  dev->set_bar_address(0, 0xc0000000);
  dev->set_bar_address(1, 0x1000);
  dev->set_bar_address(2, 0x1'0000'0000ull);
  EXPECT_TRUE(moves.empty());  // decoding is off

  dev->config_write(kCfgCommand, 2, kCommandMemory);
  ASSERT_EQ(moves.size(), 2u);
  EXPECT_EQ(moves[0], (BarMove{0, BarType::Mem32, 0x1000, std::nullopt, 0xc0000000}));
  EXPECT_EQ(moves[1], (BarMove{2, BarType::Mem64, 0x4000, std::nullopt, 0x1'0000'0000ull}));
  EXPECT_TRUE(dev->memory_enabled());
  EXPECT_FALSE(dev->io_enabled());

  moves.clear();
  dev->config_write(kCfgCommand, 2, kCommandMemory | kCommandIo);
  ASSERT_EQ(moves.size(), 1u);
  EXPECT_EQ(moves[0], (BarMove{1, BarType::Io, 0x20, std::nullopt, 0x1000}));

  // The guest moves BAR0.
  moves.clear();
  dev->config_write(kCfgBar0, 4, 0xc0010000);
  ASSERT_EQ(moves.size(), 1u);
  EXPECT_EQ(moves[0], (BarMove{0, BarType::Mem32, 0x1000, 0xc0000000, 0xc0010000}));

  // Sizing with decoding on: the all-ones pattern is not a place to map.
  moves.clear();
  dev->config_write(kCfgBar0, 4, 0xffffffff);
  ASSERT_EQ(moves.size(), 1u);
  EXPECT_EQ(moves[0].old_address, 0xc0010000u);
  EXPECT_EQ(moves[0].new_address, std::nullopt);
  dev->config_write(kCfgBar0, 4, 0xc0010000);
  ASSERT_EQ(moves.size(), 2u);
  EXPECT_EQ(moves[1].new_address, 0xc0010000u);

  // 64-bit BAR: high dword all-ones parks it at the top of the address space.
  moves.clear();
  dev->config_write(kCfgBar0 + 8, 4, 0xffffffff);
  dev->config_write(kCfgBar0 + 12, 4, 0xffffffff);
  ASSERT_EQ(moves.size(), 2u);
  EXPECT_EQ(moves[0].new_address, 0x1'ffff'c000ull);  // transient: low half written
  EXPECT_EQ(moves[1].new_address, std::nullopt);

  // Decoding off: everything goes away, once.
  moves.clear();
  dev->config_write(kCfgCommand, 2, 0);
  ASSERT_EQ(moves.size(), 2u);
  EXPECT_EQ(moves[0].index, 0);
  EXPECT_EQ(moves[0].new_address, std::nullopt);
  EXPECT_EQ(moves[1].index, 1);
  dev->config_write(kCfgCommand, 2, 0);
  EXPECT_EQ(moves.size(), 2u);

  // A late handler is told what is decoded now.
  dev->config_write(kCfgCommand, 2, kCommandMemory);
  std::vector<BarMove> late;
  dev->set_bar_move_handler([&](const BarMove& m) { late.push_back(m); });
  ASSERT_EQ(late.size(), 1u);
  EXPECT_EQ(late[0], (BarMove{0, BarType::Mem32, 0x1000, std::nullopt, 0xc0010000}));
}

TEST(PciDevice, ZeroAddressIsNotDecoded) {
  auto dev = make_device();
  std::vector<BarMove> moves;
  dev->set_bar_move_handler([&](const BarMove& m) { moves.push_back(m); });
  dev->config_write(kCfgCommand, 2, kCommandMemory | kCommandIo);
  EXPECT_TRUE(moves.empty());
  for (const BarInfo& b : dev->bars()) EXPECT_FALSE(b.mapped);
}

TEST(PciDevice, BarRegionAccessesAreBoundsChecked) {
  auto dev = make_device();
  std::array<uint8_t, 4> buf{};
  dev->bar_read(0, 0x10, buf);
  EXPECT_EQ(dev->last_bar, 0);
  EXPECT_EQ(dev->last_offset, 0x10u);
  EXPECT_EQ(buf[0], 0xa0);

  dev->last_bar = 0xff;
  dev->bar_read(0, 0xffe, buf);  // crosses the end of the 4 KiB BAR
  EXPECT_EQ(dev->last_bar, 0xff);
  EXPECT_EQ(buf, (std::array<uint8_t, 4>{0xff, 0xff, 0xff, 0xff}));
  dev->bar_read(3, 0, buf);  // upper half of the 64-bit BAR
  EXPECT_EQ(dev->last_bar, 0xff);
  dev->bar_read(5, 0, buf);  // undeclared
  EXPECT_EQ(dev->last_bar, 0xff);
  const std::array<uint8_t, 2> w{1, 2};
  dev->bar_write(1, 0x1f, w);  // crosses the end of the 32-byte I/O BAR
  EXPECT_TRUE(dev->last_written.empty());
  dev->bar_write(1, 0x1e, w);
  EXPECT_EQ(dev->last_written, (std::vector<uint8_t>{1, 2}));
  dev->bar_read(0, ~0ull - 1, buf);  // offset + size overflows
  EXPECT_EQ(buf[0], 0xff);
}

// --- Bus 0, mechanism #1 and ECAM ------------------------------------------------

uint32_t cf8(uint8_t dev, uint16_t reg, uint8_t fn = 0, uint8_t bus = 0) {
  return 0x80000000u | (uint32_t{bus} << 16) | (uint32_t{dev} << 11) | (uint32_t{fn} << 8) |
         (reg & 0xfc);
}

struct PortIo {
  PciConfigIo& io;
  void outl(uint16_t port, uint32_t v) { out(port, v, 4); }
  void out(uint16_t port, uint32_t v, size_t n) {
    std::array<uint8_t, 4> b{};
    for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    io.write(port - PciConfigIo::kBase, std::span<const uint8_t>(b.data(), n));
  }
  uint32_t in(uint16_t port, size_t n) {
    std::array<uint8_t, 4> b{};
    io.read(port - PciConfigIo::kBase, std::span<uint8_t>(b.data(), n));
    uint32_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint32_t{b[i]} << (8 * i);
    return v;
  }
};

TEST(PciBus, HostBridgeInSlotZero) {
  PciBus bus;
  EXPECT_EQ(bus.config_read(0, 0, 0, kCfgVendorId, 2), 0x8086u);
  EXPECT_EQ(bus.config_read(0, 0, 0, kCfgDeviceId, 2), 0x0d57u);
  EXPECT_EQ(bus.config_read(0, 0, 0, kCfgRevision, 4) >> 8, kClassHostBridge);
  EXPECT_EQ(bus.config_read(0, 0, 0, kCfgInterruptPin, 1), 0u);
  EXPECT_TRUE(bus.device(0)->bars().empty());
}

TEST(PciBus, AddDeviceAssignsSlotsAndInterruptLines) {
  PciBus bus;
  auto a = make_device();
  auto b = make_device();
  EXPECT_EQ(bus.add_device(a), 1);
  EXPECT_EQ(bus.add_device(b, 5), 5);
  EXPECT_EQ(a->interrupt_line(), intx_gsi(1, 0));
  EXPECT_EQ(b->interrupt_line(), 16 + (5 + 0) % 4);
  EXPECT_EQ(bus.device(5), b);
  EXPECT_EQ(bus.device(2), nullptr);
  EXPECT_EQ(bus.device(200), nullptr);
  EXPECT_THROW(bus.add_device(make_device(), 5), Error);
  EXPECT_THROW(bus.add_device(make_device(), 0), Error);
  EXPECT_THROW(bus.add_device(make_device(), 32), Error);
  EXPECT_THROW(bus.add_device(nullptr), Error);
  for (int i = 0; i < 29; ++i) bus.add_device(make_device());
  EXPECT_THROW(bus.add_device(make_device()), Error);
}

TEST(PciBus, IntxSwizzle) {
  static_assert(intx_gsi(0, 0) == 16);
  static_assert(intx_gsi(1, 0) == 17);
  static_assert(intx_gsi(3, 1) == 16);
  static_assert(intx_gsi(31, 3) == 18);
  EXPECT_EQ(intx_gsi(2, 2), 16u);
}

TEST(PciConfigIo, AddressRegisterAndEnableBit) {
  auto bus = std::make_shared<PciBus>();
  PciConfigIo io(bus);
  PortIo p{io};
  p.outl(0xcf8, 0x80000000);
  EXPECT_EQ(p.in(0xcf8, 4), 0x80000000u);  // Linux's type-1 probe
  p.outl(0xcf8, 0x00001003);
  EXPECT_EQ(p.in(0xcf8, 4), 0x00001000u);  // bits 1:0 read as 0
  EXPECT_EQ(p.in(0xcf8, 2), 0xffffu);      // not a dword: not the address register
  p.out(0xcfa, 0x1234, 2);                   // ignored
  EXPECT_EQ(p.in(0xcf8, 4), 0x00001000u);

  // Enable bit clear: the data port floats.
  p.outl(0xcf8, cf8(0, 0) & ~0x80000000u);
  EXPECT_EQ(p.in(0xcfc, 4), 0xffffffffu);
  p.outl(0xcf8, cf8(0, 0));
  EXPECT_EQ(p.in(0xcfc, 4), 0x0d578086u);
}

TEST(PciConfigIo, DataPortSizesAndOffsets) {
  auto bus = std::make_shared<PciBus>();
  auto dev = make_device();
  const uint8_t slot = bus->add_device(dev, 3);
  PciConfigIo io(bus);
  PortIo p{io};
  p.outl(0xcf8, cf8(slot, 0));
  EXPECT_EQ(p.in(0xcfc, 4), 0x10421af4u);
  EXPECT_EQ(p.in(0xcfc, 1), 0xf4u);
  EXPECT_EQ(p.in(0xcfd, 1), 0x1au);
  EXPECT_EQ(p.in(0xcfe, 2), 0x1042u);
  EXPECT_EQ(p.in(0xcff, 1), 0x10u);
  EXPECT_EQ(p.in(0xcfd, 2), 0xffffu);  // word at an odd byte: misaligned

  // Byte write to the command register through 0xcfc, word to 0xcfe (status).
  p.outl(0xcf8, cf8(slot, kCfgCommand));
  p.out(0xcfc, kCommandMemory | kCommandBusMaster, 1);
  EXPECT_TRUE(dev->memory_enabled());
  EXPECT_TRUE(dev->bus_master_enabled());
  EXPECT_EQ(p.in(0xcfc, 2), kCommandMemory | kCommandBusMaster);
  p.out(0xcfd, 0x04, 1);  // interrupt disable (bit 10) via the high byte
  EXPECT_EQ(p.in(0xcfc, 2), kCommandMemory | kCommandBusMaster | kCommandIntxDisable);
  p.out(0xcfd, 0x0000, 2);  // misaligned: ignored
  EXPECT_EQ(p.in(0xcfc, 2), kCommandMemory | kCommandBusMaster | kCommandIntxDisable);

  // BAR sizing through the ports.
  p.outl(0xcf8, cf8(slot, kCfgBar0));
  p.outl(0xcfc, 0xffffffff);
  EXPECT_EQ(p.in(0xcfc, 4), 0xfffff000u);

  // Interrupt line at 0x3c, pin at 0x3d via a byte read at 0xcfd.
  p.outl(0xcf8, cf8(slot, kCfgInterruptLine));
  EXPECT_EQ(p.in(0xcfc, 1), intx_gsi(slot, 0));
  EXPECT_EQ(p.in(0xcfd, 1), 1u);
}

TEST(PciConfigIo, MissingDevicesFunctionsAndBusesReadAllOnes) {
  auto bus = std::make_shared<PciBus>();
  PciConfigIo io(bus);
  PortIo p{io};
  p.outl(0xcf8, cf8(7, 0));
  EXPECT_EQ(p.in(0xcfc, 4), 0xffffffffu);
  EXPECT_EQ(p.in(0xcfe, 2), 0xffffu);
  p.outl(0xcfc, 0);  // a write to nothing is dropped
  p.outl(0xcf8, cf8(0, 0, /*fn=*/1));
  EXPECT_EQ(p.in(0xcfc, 4), 0xffffffffu);
  p.outl(0xcf8, cf8(0, 0, 0, /*bus=*/1));
  EXPECT_EQ(p.in(0xcfc, 4), 0xffffffffu);
  // Extended register bits (27:24) address beyond 256 bytes: all-ones there.
  p.outl(0xcf8, cf8(0, 0) | (1u << 24));
  EXPECT_EQ(p.in(0xcfc, 4), 0xffffffffu);
}

TEST(PciConfigIo, ResetControlRegister) {
  auto bus = std::make_shared<PciBus>();
  std::vector<devices::GuestRequest> requests;
  PciConfigIo io(bus, [&](devices::GuestRequest r) { requests.push_back(r); });
  PortIo p{io};
  p.out(0xcf9, 0x02, 1);
  EXPECT_TRUE(requests.empty());
  EXPECT_EQ(p.in(0xcf9, 1), 0u);
  p.out(0xcf9, 0x06, 1);
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0], devices::GuestRequest::Reset);
}

TEST(PciConfigMmio, EcamAccess) {
  auto bus = std::make_shared<PciBus>();
  auto dev = make_device();
  bus->add_device(dev, 2);
  devices::Bus mmio;
  mmio.insert(std::make_shared<PciConfigMmio>(bus), PciConfigMmio::kBase, PciConfigMmio::kSize,
              "ecam");
  auto rd = [&](uint64_t off, size_t n) {
    std::array<uint8_t, 8> b{};
    mmio.read(PciConfigMmio::kBase + off, std::span<uint8_t>(b.data(), n));
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t{b[i]} << (8 * i);
    return v;
  };
  auto wr = [&](uint64_t off, uint32_t v, size_t n) {
    std::array<uint8_t, 4> b{};
    for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    mmio.write(PciConfigMmio::kBase + off, std::span<const uint8_t>(b.data(), n));
  };
  EXPECT_EQ(rd(0, 4), 0x0d578086u);
  EXPECT_EQ(rd(kCfgRevision, 4) >> 8, kClassHostBridge);
  const uint64_t d2 = 2u << 15;
  EXPECT_EQ(rd(d2, 4), 0x10421af4u);
  EXPECT_EQ(rd(d2 + 2, 2), 0x1042u);
  EXPECT_EQ(rd(d2 + 1, 1), 0x1au);
  EXPECT_EQ(rd(d2 + 1, 2), 0xffffu);           // misaligned
  EXPECT_EQ(rd(d2, 8), 0xffffffffffffffffu);   // 8-byte: unsupported
  EXPECT_EQ(rd(d2 + 0x100, 4), 0xffffffffu);   // 256-byte function
  EXPECT_EQ(rd(3u << 15, 4), 0xffffffffu);     // empty slot
  EXPECT_EQ(rd(d2 | (1u << 12), 4), 0xffffffffu);  // function 1
  EXPECT_EQ(rd(31u << 15 | 0xffc, 4), 0xffffffffu);

  wr(d2 + kCfgCommand, kCommandMemory, 2);
  EXPECT_TRUE(dev->memory_enabled());
  wr(d2 + kCfgBar0, 0xffffffff, 4);
  EXPECT_EQ(rd(d2 + kCfgBar0, 4), 0xfffff000u);
  wr(d2 + kCfgVendorId, 0, 4);
  EXPECT_EQ(rd(d2, 4), 0x10421af4u);
}

TEST(PciBus, ConcurrentConfigAccess) {
  auto bus = std::make_shared<PciBus>();
  auto dev = make_device();
  bus->add_device(dev, 1);
  std::atomic<bool> bad{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        bus->config_write(0, 1, 0, kCfgInterruptLine, 1, static_cast<uint32_t>(t));
        bus->config_write(0, 1, 0, kCfgBar0, 4, 0xffffffff);
        if (bus->config_read(0, 1, 0, kCfgVendorId, 4) != 0x10421af4u) bad = true;
        const uint32_t bar = bus->config_read(0, 1, 0, kCfgBar0, 4);
        if (bar & 0xfff) bad = true;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_FALSE(bad);
}

// --- BAR allocation ---------------------------------------------------------------

TEST(BarAllocator, NaturalAlignment) {
  BarAllocator a(0xc0000000, 0xe0000000, 0x1'0000'0000ull, 0x2'0000'0000ull);
  auto x = a.allocate(BarWindow::Mmio32, 0x1000);
  auto y = a.allocate(BarWindow::Mmio32, 0x100000);
  auto z = a.allocate(BarWindow::Mmio32, 0x10);
  ASSERT_TRUE(x && y && z);
  EXPECT_EQ(*x, 0xc0000000u);
  EXPECT_EQ(*y % 0x100000, 0u);
  EXPECT_EQ(*y, 0xc0100000u);
  EXPECT_EQ(*z, 0xc0001000u);  // fills the hole before y
  auto io = a.allocate(BarWindow::Io, 0x40);
  ASSERT_TRUE(io);
  EXPECT_EQ(*io, 0x1000u);
  EXPECT_FALSE(a.allocate(BarWindow::Mmio32, 0x3000));  // not a power of two
  EXPECT_FALSE(a.allocate(BarWindow::Mmio32, 0));
  auto big = a.allocate(BarWindow::Mmio64, 1ull << 31);
  ASSERT_TRUE(big);
  EXPECT_EQ(*big, 0x1'0000'0000ull);
}

TEST(BarAllocator, ExhaustionAndRelease) {
  BarAllocator a(0xc0000000, 0xc0004000, 0, 0, 0x1000, 0x1100);
  std::vector<uint64_t> got;
  while (auto x = a.allocate(BarWindow::Mmio32, 0x1000)) got.push_back(*x);
  EXPECT_EQ(got.size(), 4u);
  EXPECT_EQ(a.free_bytes(BarWindow::Mmio32), 0u);
  EXPECT_FALSE(a.allocate(BarWindow::Mmio32, 0x10));
  EXPECT_FALSE(a.allocate(BarWindow::Mmio64, 0x1000));  // no 64-bit window
  a.release(BarWindow::Mmio32, got[3], 0x1000);
  a.release(BarWindow::Mmio32, got[2], 0x1000);
  EXPECT_THROW(a.release(BarWindow::Mmio32, got[2], 0x1000), Error);
  EXPECT_THROW(a.release(BarWindow::Mmio32, got[2] + 0x800, 0x1000), Error);
  EXPECT_THROW(a.release(BarWindow::Mmio32, 0xd0000000, 0x1000), Error);
  // The two neighbours merged into one aligned 8 KiB hole.
  auto m = a.allocate(BarWindow::Mmio32, 0x2000);
  ASSERT_TRUE(m);
  EXPECT_EQ(*m, 0xc0002000u);
  EXPECT_FALSE(a.allocate(BarWindow::Io, 0x200));
  EXPECT_TRUE(a.allocate(BarWindow::Io, 0x100));
  EXPECT_FALSE(a.allocate(BarWindow::Io, 4));
}

TEST(BarAllocator, AlignmentWastesNoCorrectness) {
  // A 16 KiB BAR cannot start in the middle of a 16 KiB block.
  BarAllocator a(0xc0001000, 0xc0009000, 0, 0);
  auto x = a.allocate(BarWindow::Mmio32, 0x4000);
  ASSERT_TRUE(x);
  EXPECT_EQ(*x, 0xc0004000u);
  EXPECT_FALSE(a.allocate(BarWindow::Mmio32, 0x4000));
  EXPECT_EQ(a.free_bytes(BarWindow::Mmio32), 0x4000u);
}

TEST(BarAllocator, BadWindowsThrow) {
  EXPECT_THROW(BarAllocator(0xe0000000, 0xc0000000), Error);
  EXPECT_THROW(BarAllocator(0xc0000000, 0x1'0000'1000ull), Error);
  EXPECT_THROW(BarAllocator(0xc0000000, 0xe0000000, 0, 0, 0x1000, 0x20000), Error);
}

TEST(BarAllocator, AssignProgramsEveryBar) {
  BarAllocator a(0xc0000000, 0xe0000000, 0x10'0000'0000ull, 0x20'0000'0000ull);
  auto dev = make_device();
  a.assign(*dev, "test");
  const auto bars = dev->bars();
  ASSERT_EQ(bars.size(), 3u);
  EXPECT_EQ(bars[0].address, 0xc0000000u);
  EXPECT_EQ(bars[1].address, 0x1000u);
  EXPECT_EQ(bars[2].address, 0x10'0000'0000ull);  // 64-bit BAR above 4 GiB
  for (const auto& b : bars) EXPECT_EQ(b.address % b.size, 0u);

  // Without a 64-bit window the 64-bit BAR goes below 4 GiB.
  BarAllocator low(0xc0000000, 0xe0000000);
  auto d2 = make_device();
  low.assign(*d2, "d2");
  EXPECT_LT(d2->bars()[2].address, 1ull << 32);

  // Out of space: an error naming the device, and nothing leaked.
  BarAllocator tiny(0xc0000000, 0xc0001000, 0, 0);
  auto d3 = make_device();
  try {
    tiny.assign(*d3, "disk0");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("disk0 BAR2"), std::string::npos) << e.what();
  }
  EXPECT_EQ(tiny.free_bytes(BarWindow::Mmio32), 0x1000u);
  EXPECT_EQ(tiny.free_bytes(BarWindow::Io), 0xf000u);
}

// --- Bus::remove and BAR remapping on the buses ------------------------------------

class Recorder : public devices::BusDevice {
 public:
  void read(uint64_t, std::span<uint8_t> data) override { std::fill(data.begin(), data.end(), 7); }
  void write(uint64_t, std::span<const uint8_t>) override {}
};

TEST(BusRemove, FreesTheRange) {
  devices::Bus bus;
  bus.insert(std::make_shared<Recorder>(), 0x1000, 0x100, "a");
  bus.insert(std::make_shared<Recorder>(), 0x2000, 0x100, "b");
  EXPECT_FALSE(bus.remove(0x1010));  // not a base
  EXPECT_TRUE(bus.remove(0x1000));
  EXPECT_FALSE(bus.remove(0x1000));
  std::array<uint8_t, 1> b{};
  EXPECT_FALSE(bus.read(0x1000, b));
  EXPECT_EQ(b[0], 0xff);
  EXPECT_TRUE(bus.read(0x2000, b));
  EXPECT_EQ(b[0], 7);
  bus.insert(std::make_shared<Recorder>(), 0x1080, 0x100, "c");  // space is free again
  EXPECT_EQ(bus.name_at(0x1100), "c");
}

TEST(BusRemove, ConcurrentWithDispatch) {
  devices::Bus bus;
  bus.insert(std::make_shared<Recorder>(), 0x0, 0x10, "fixed");
  std::atomic<bool> stop{false}, bad{false};
  std::thread reader([&] {
    std::array<uint8_t, 4> b{};
    while (!stop) {
      if (!bus.read(0x4, b) || b[0] != 7) bad = true;
      bus.read(0x1000, b);  // sometimes there, sometimes not
    }
  });
  for (int i = 0; i < 20000; ++i) {
    bus.insert(std::make_shared<Recorder>(), 0x1000, 0x10, "moving");
    EXPECT_TRUE(bus.remove(0x1000));
  }
  stop = true;
  reader.join();
  EXPECT_FALSE(bad);
}

TEST(BarMapper, KeepsBarsOnTheBuses) {
  devices::Bus mmio, pio;
  auto dev = make_device();
  std::vector<std::string> conflicts;
  connect_bars(dev, mmio, pio, "dev", [&](const std::string& m) { conflicts.push_back(m); });
  dev->set_bar_address(0, 0xc0000000);
  dev->set_bar_address(1, 0x2000);
  dev->set_bar_address(2, 0x1'0000'0000ull);
  EXPECT_EQ(mmio.name_at(0xc0000000), "");

  dev->config_write(kCfgCommand, 2, kCommandMemory | kCommandIo);
  EXPECT_EQ(mmio.name_at(0xc0000000), "dev.bar0");
  EXPECT_EQ(mmio.name_at(0xc0000fff), "dev.bar0");
  EXPECT_EQ(mmio.name_at(0x1'0000'3fffull), "dev.bar2");
  EXPECT_EQ(pio.name_at(0x201f), "dev.bar1");

  std::array<uint8_t, 2> b{};
  EXPECT_TRUE(mmio.read(0x1'0000'0010ull, b));
  EXPECT_EQ(dev->last_bar, 2);
  EXPECT_EQ(dev->last_offset, 0x10u);
  const std::array<uint8_t, 1> w{0x5a};
  EXPECT_TRUE(pio.write(0x2003, w));
  EXPECT_EQ(dev->last_bar, 1);
  EXPECT_EQ(dev->last_offset, 3u);

  // The guest moves BAR0.
  dev->config_write(kCfgBar0, 4, 0xc0100000);
  EXPECT_EQ(mmio.name_at(0xc0000000), "");
  EXPECT_EQ(mmio.name_at(0xc0100000), "dev.bar0");

  // The guest moves BAR0 on top of something else: it stays off the bus,
  // and the other range is untouched when BAR0 moves on again.
  mmio.insert(std::make_shared<Recorder>(), 0xd0000000, 0x1000, "other");
  dev->config_write(kCfgBar0, 4, 0xd0000000);
  ASSERT_EQ(conflicts.size(), 1u);
  EXPECT_NE(conflicts[0].find("dev.bar0"), std::string::npos);
  EXPECT_NE(conflicts[0].find("0xd0000000"), std::string::npos);
  EXPECT_EQ(mmio.name_at(0xd0000000), "other");
  EXPECT_EQ(mmio.name_at(0xc0100000), "");
  dev->config_write(kCfgBar0, 4, 0xc0200000);
  EXPECT_EQ(mmio.name_at(0xd0000000), "other");
  EXPECT_EQ(mmio.name_at(0xc0200000), "dev.bar0");

  // Decoding off: all BARs leave the buses.
  dev->config_write(kCfgCommand, 2, 0);
  EXPECT_EQ(mmio.name_at(0xc0200000), "");
  EXPECT_EQ(mmio.name_at(0x1'0000'0000ull), "");
  EXPECT_EQ(pio.name_at(0x2000), "");
}

}  // namespace
}  // namespace rz::pci
