// Unit tests of the small legacy devices: i8042, CMOS/RTC, ACPI PM, pvpanic.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "devices/acpi_pm.h"
#include "devices/bus.h"
#include "devices/cmos.h"
#include "devices/i8042.h"
#include "devices/pvpanic.h"
#include "x86/layout.h"

namespace rz::devices {
namespace {

uint8_t in8(BusDevice& d, uint64_t offset) {
  uint8_t v = 0;
  d.read(offset, std::span<uint8_t>(&v, 1));
  return v;
}
void out8(BusDevice& d, uint64_t offset, uint8_t v) {
  d.write(offset, std::span<const uint8_t>(&v, 1));
}
uint16_t in16(BusDevice& d, uint64_t offset) {
  uint8_t b[2] = {};
  d.read(offset, b);
  return static_cast<uint16_t>(b[0] | b[1] << 8);
}
void out16(BusDevice& d, uint64_t offset, uint16_t v) {
  const uint8_t b[2] = {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8)};
  d.write(offset, b);
}

struct Requests {
  GuestRequestHandler handler() {
    return [this](GuestRequest r) { seen.push_back(r); };
  }
  std::vector<GuestRequest> seen;
};

// --- i8042 ----------------------------------------------------------------

class I8042Test : public ::testing::Test {
 protected:
  I8042Test() : kbc(requests.handler()) {}
  uint8_t status() { return in8(kbc, I8042::kCommandOffset); }
  uint8_t data() { return in8(kbc, I8042::kDataOffset); }
  void command(uint8_t c) { out8(kbc, I8042::kCommandOffset, c); }
  void put(uint8_t v) { out8(kbc, I8042::kDataOffset, v); }

  Requests requests;
  I8042 kbc;
};

TEST_F(I8042Test, IdleStatus) {
  const uint8_t s = status();
  EXPECT_EQ(s & I8042::kStatusOutputFull, 0);
  EXPECT_EQ(s & I8042::kStatusInputFull, 0);
  EXPECT_NE(s, 0xff) << "Linux takes 0xff for 'no controller'";
}

TEST_F(I8042Test, SelfTestAndInterfaceTests) {
  command(0xaa);
  EXPECT_EQ(status() & I8042::kStatusOutputFull, I8042::kStatusOutputFull);
  EXPECT_EQ(status() & I8042::kStatusCommand, I8042::kStatusCommand);
  EXPECT_EQ(data(), 0x55);
  EXPECT_EQ(status() & I8042::kStatusOutputFull, 0);
  EXPECT_EQ(status() & I8042::kStatusSystem, I8042::kStatusSystem);
  command(0xab);
  EXPECT_EQ(data(), 0x00);
  command(0xa9);
  EXPECT_EQ(data(), 0x00);
  EXPECT_TRUE(requests.seen.empty());
}

TEST_F(I8042Test, ConfigByteAndPortEnables) {
  command(0x20);
  EXPECT_EQ(data(), I8042::kDefaultConfig);
  command(0x60);
  put(0x47);
  EXPECT_EQ(status() & I8042::kStatusCommand, 0);
  command(0x20);
  EXPECT_EQ(data(), 0x47);
  // Linux's bit-assignment test: aux disable/enable show in CTR bit 5.
  command(0xa7);
  command(0x20);
  EXPECT_EQ(data() & 0x20, 0x20);
  command(0xa8);
  command(0x20);
  EXPECT_EQ(data() & 0x20, 0x00);
  command(0xad);
  command(0x20);
  EXPECT_EQ(data() & 0x10, 0x10);
  command(0xae);
  command(0x20);
  EXPECT_EQ(data() & 0x10, 0x00);
}

TEST_F(I8042Test, AuxLoopback) {
  command(0xd3);
  put(0x5a);
  EXPECT_EQ(status() & 0x21, 0x21);  // output full, from aux
  EXPECT_EQ(data(), 0x5a);
  EXPECT_EQ(status() & 0x21, 0x00);
  command(0xd2);
  put(0x42);
  EXPECT_EQ(status() & 0x21, 0x01);
  EXPECT_EQ(data(), 0x42);
}

TEST_F(I8042Test, DataWithoutCommandGoesNowhere) {
  put(0xf2);  // "identify" for an absent keyboard
  EXPECT_EQ(status() & I8042::kStatusOutputFull, 0);
  command(0xd4);
  put(0xff);  // to the absent mouse
  EXPECT_EQ(status() & I8042::kStatusOutputFull, 0);
  EXPECT_TRUE(requests.seen.empty());
}

TEST_F(I8042Test, ResetPulse) {
  command(0xff);  // pulse nothing (the A20 code sends this)
  EXPECT_TRUE(requests.seen.empty());
  command(0xfe);
  EXPECT_EQ(requests.seen, std::vector<GuestRequest>{GuestRequest::Reset});
}

TEST_F(I8042Test, OutputPortWrite) {
  command(0xd1);
  put(0xdf);  // A20 on, reset line high
  EXPECT_TRUE(requests.seen.empty());
  command(0xd0);
  EXPECT_EQ(data(), 0xdf);
  command(0xd1);
  put(0xde);  // reset line low
  EXPECT_EQ(requests.seen, std::vector<GuestRequest>{GuestRequest::Reset});
}

TEST(I8042Attach, TwoPortsLeavePit61Free) {
  Requests requests;
  auto kbc = std::make_shared<I8042>(requests.handler());
  Bus pio;
  I8042::attach(pio, kbc);
  EXPECT_EQ(pio.name_at(x86::kI8042DataPort), "i8042 data");
  EXPECT_EQ(pio.name_at(x86::kI8042CmdPort), "i8042 command");
  for (uint64_t port = 0x61; port <= 0x63; ++port) EXPECT_EQ(pio.name_at(port), "");

  const uint8_t selftest = 0xaa;
  ASSERT_TRUE(pio.write(x86::kI8042CmdPort, std::span(&selftest, 1)));
  uint8_t v = 0;
  ASSERT_TRUE(pio.read(x86::kI8042DataPort, std::span(&v, 1)));
  EXPECT_EQ(v, 0x55);
  const uint8_t reset = 0xfe;
  ASSERT_TRUE(pio.write(x86::kI8042CmdPort, std::span(&reset, 1)));
  EXPECT_EQ(requests.seen, std::vector<GuestRequest>{GuestRequest::Reset});
}

// --- CMOS / RTC -------------------------------------------------------------

int64_t epoch(int y, unsigned mo, unsigned d, int h, int mi, int s) {
  using namespace std::chrono;
  const sys_seconds tp = sys_days{year{y} / month{mo} / day{d}} + hours{h} + minutes{mi} +
                         seconds{s};
  return tp.time_since_epoch().count();
}

class CmosTest : public ::testing::Test {
 protected:
  CmosTest()
      : host_time(epoch(2024, 2, 29, 13, 45, 56)),  // a Thursday
        cmos(512 * x86::MiB, 0, [this] { return host_time; }) {}
  uint8_t get(uint8_t index) {
    out8(cmos, Cmos::kIndexOffset, index);
    return in8(cmos, Cmos::kDataOffset);
  }
  void set(uint8_t index, uint8_t v) {
    out8(cmos, Cmos::kIndexOffset, index);
    out8(cmos, Cmos::kDataOffset, v);
  }
  int64_t host_time;
  Cmos cmos;
};

TEST_F(CmosTest, StatusRegisters) {
  EXPECT_EQ(get(0x0a) & 0x80, 0) << "UIP never set";
  EXPECT_EQ(get(0x0b), 0x02);
  EXPECT_EQ(get(0x0c), 0x00);
  EXPECT_EQ(get(0x0d), 0x80);
  EXPECT_EQ(get(0x8d), 0x80) << "index bit 7 (NMI mask) is ignored";
  set(0x0a, 0xa6);
  EXPECT_EQ(get(0x0a), 0x26);
}

TEST_F(CmosTest, TimeInBcd24h) {
  EXPECT_EQ(get(0x00), 0x56);
  EXPECT_EQ(get(0x02), 0x45);
  EXPECT_EQ(get(0x04), 0x13);
  EXPECT_EQ(get(0x06), 0x05);  // Thursday, Sunday = 1
  EXPECT_EQ(get(0x07), 0x29);
  EXPECT_EQ(get(0x08), 0x02);
  EXPECT_EQ(get(0x09), 0x24);
  EXPECT_EQ(get(0x32), 0x20);
  host_time += 4;
  EXPECT_EQ(get(0x00), 0x00);
  EXPECT_EQ(get(0x02), 0x46);
}

TEST_F(CmosTest, TimeInBinaryAnd12h) {
  set(0x0b, 0x06);  // binary, 24h
  EXPECT_EQ(get(0x00), 56);
  EXPECT_EQ(get(0x04), 13);
  EXPECT_EQ(get(0x09), 24);
  EXPECT_EQ(get(0x32), 20);
  set(0x0b, 0x04);  // binary, 12h
  EXPECT_EQ(get(0x04), 0x80 | 1);
  set(0x0b, 0x00);  // BCD, 12h
  EXPECT_EQ(get(0x04), 0x81);
  host_time = epoch(2024, 3, 1, 0, 30, 0);
  EXPECT_EQ(get(0x04), 0x12) << "half past midnight is 12 AM";
  host_time = epoch(2024, 3, 1, 12, 30, 0);
  EXPECT_EQ(get(0x04), 0x92) << "half past noon is 12 PM";
}

TEST_F(CmosTest, SettingTheClockKeepsAnOffset) {
  set(0x0b, 0x82);  // SET: freeze and write
  host_time += 100;
  EXPECT_EQ(get(0x00), 0x56) << "frozen while SET";
  set(0x32, 0x20);
  set(0x09, 0x30);
  set(0x08, 0x01);
  set(0x07, 0x15);
  set(0x04, 0x08);
  set(0x02, 0x00);
  set(0x00, 0x00);
  set(0x0b, 0x02);  // run
  EXPECT_EQ(get(0x09), 0x30);
  EXPECT_EQ(get(0x08), 0x01);
  EXPECT_EQ(get(0x07), 0x15);
  EXPECT_EQ(get(0x04), 0x08);
  EXPECT_EQ(get(0x06), 0x03);  // 15 Jan 2030 is a Tuesday
  host_time += 61;
  EXPECT_EQ(get(0x02), 0x01);
  EXPECT_EQ(get(0x00), 0x01);

  set(0x00, 0x7a);  // not BCD: dropped
  EXPECT_EQ(get(0x00), 0x01);
  set(0x08, 0x13);  // month 13: dropped
  EXPECT_EQ(get(0x08), 0x01);
  set(0x00, 0x30);  // a single field without SET works too
  EXPECT_EQ(get(0x00), 0x30);
  EXPECT_EQ(get(0x02), 0x01);
}

TEST_F(CmosTest, PlainRamAndWideAccess) {
  set(0x40, 0xab);
  EXPECT_EQ(get(0x40), 0xab);
  out16(cmos, Cmos::kIndexOffset, 0xcd41);  // index 0x41, then data 0xcd
  EXPECT_EQ(get(0x41), 0xcd);
  EXPECT_EQ(in8(cmos, Cmos::kIndexOffset), 0xff) << "index port is write-only";
}

uint16_t cmos16(Cmos& c, uint8_t index) {
  out8(c, Cmos::kIndexOffset, index);
  const uint8_t lo = in8(c, Cmos::kDataOffset);
  out8(c, Cmos::kIndexOffset, index + 1);
  return static_cast<uint16_t>(lo | in8(c, Cmos::kDataOffset) << 8);
}
uint8_t cmos8(Cmos& c, uint8_t index) {
  out8(c, Cmos::kIndexOffset, index);
  return in8(c, Cmos::kDataOffset);
}

TEST(CmosMemory, HalfAGigabyte) {
  Cmos c(512 * x86::MiB, 0);
  EXPECT_EQ(cmos16(c, 0x15), 640);
  EXPECT_EQ(cmos16(c, 0x17), 0xffff);  // 511 MiB in KiB does not fit
  EXPECT_EQ(cmos16(c, 0x30), 0xffff);
  EXPECT_EQ(cmos16(c, 0x34), (512 - 16) * 16);  // 64 KiB units
  EXPECT_EQ(cmos8(c, 0x5b), 0);
  EXPECT_EQ(cmos8(c, 0x5c), 0);
  EXPECT_EQ(cmos8(c, 0x5d), 0);
}

TEST(CmosMemory, FiveGigabytes) {
  // 3 GiB below the MMIO hole, 2 GiB above 4 GiB.
  Cmos c(3 * x86::GiB, 2 * x86::GiB);
  EXPECT_EQ(cmos16(c, 0x15), 640);
  EXPECT_EQ(cmos16(c, 0x17), 0xffff);
  EXPECT_EQ(cmos16(c, 0x34), (3072 - 16) * 16);
  EXPECT_EQ(cmos16(c, 0x34), 0xbf00);
  const uint32_t above = cmos8(c, 0x5b) | cmos8(c, 0x5c) << 8 | cmos8(c, 0x5d) << 16;
  EXPECT_EQ(above, 2 * x86::GiB / (64 * x86::KiB));
}

TEST(CmosMemory, SmallMachine) {
  Cmos c(8 * x86::MiB, 0);
  EXPECT_EQ(cmos16(c, 0x17), 7 * 1024);
  EXPECT_EQ(cmos16(c, 0x30), 7 * 1024);
  EXPECT_EQ(cmos16(c, 0x34), 0);
}

TEST(CmosMemory, HugeAbove4gIsCapped) {
  Cmos c(3 * x86::GiB, 2048 * x86::GiB);
  EXPECT_EQ(cmos8(c, 0x5b), 0xff);
  EXPECT_EQ(cmos8(c, 0x5c), 0xff);
  EXPECT_EQ(cmos8(c, 0x5d), 0xff);
}

TEST(CmosClock, DefaultClockIsTheHostClock) {
  Cmos c(x86::GiB, 0);
  out8(c, Cmos::kIndexOffset, 0x0b);
  out8(c, Cmos::kDataOffset, 0x06);  // binary
  const auto now = std::chrono::system_clock::now();
  const auto ymd = std::chrono::year_month_day{std::chrono::floor<std::chrono::days>(now)};
  const int year = static_cast<int>(ymd.year());
  const int cmos_year = cmos8(c, 0x32) * 100 + cmos8(c, 0x09);
  EXPECT_NEAR(cmos_year, year, 1);  // a New Year's Eve race is possible
}

// --- ACPI PM ----------------------------------------------------------------

class AcpiPmTest : public ::testing::Test {
 protected:
  AcpiPmTest() : pm(requests.handler()) {}
  static uint16_t sleep(uint16_t typ, bool enable) {
    return static_cast<uint16_t>(typ << AcpiPm::kCntSlpTypShift |
                                 (enable ? AcpiPm::kCntSlpEn : 0));
  }
  Requests requests;
  AcpiPm pm;
};

TEST_F(AcpiPmTest, SciEnabledAlways) {
  EXPECT_EQ(in16(pm, AcpiPm::kPm1aCntOffset) & AcpiPm::kCntSciEn, AcpiPm::kCntSciEn);
  out16(pm, AcpiPm::kPm1aCntOffset, 0);
  EXPECT_EQ(in16(pm, AcpiPm::kPm1aCntOffset), AcpiPm::kCntSciEn);
}

TEST_F(AcpiPmTest, S5PowersOff) {
  // ACPICA writes SLP_TYP first, then SLP_TYP | SLP_EN.
  out16(pm, AcpiPm::kPm1aCntOffset, sleep(x86::kSlpTypS5, false) | AcpiPm::kCntSciEn);
  EXPECT_TRUE(requests.seen.empty());
  out16(pm, AcpiPm::kPm1aCntOffset, sleep(x86::kSlpTypS5, true) | AcpiPm::kCntSciEn);
  EXPECT_EQ(requests.seen, std::vector<GuestRequest>{GuestRequest::PowerOff});
  EXPECT_EQ(in16(pm, AcpiPm::kPm1aCntOffset) & AcpiPm::kCntSlpEn, 0)
      << "SLP_EN reads 0";
}

TEST_F(AcpiPmTest, OtherSleepTypesIgnored) {
  for (uint16_t typ = 0; typ < 8; ++typ) {
    if (typ == x86::kSlpTypS5) continue;
    out16(pm, AcpiPm::kPm1aCntOffset, sleep(typ, true));
  }
  EXPECT_TRUE(requests.seen.empty());
}

TEST_F(AcpiPmTest, ByteWriteOfHighControlByte) {
  out8(pm, AcpiPm::kPm1aCntOffset + 1,
       static_cast<uint8_t>(sleep(x86::kSlpTypS5, true) >> 8));
  EXPECT_EQ(requests.seen, std::vector<GuestRequest>{GuestRequest::PowerOff});
  requests.seen.clear();
  out8(pm, AcpiPm::kPm1aCntOffset, 0x01);  // low byte alone: no sleep
  EXPECT_TRUE(requests.seen.empty());
}

TEST_F(AcpiPmTest, ResetRegister) {
  out8(pm, AcpiPm::kResetOffset, 0x02);
  EXPECT_TRUE(requests.seen.empty());
  out8(pm, AcpiPm::kResetOffset, x86::kAcpiResetValue);
  EXPECT_EQ(requests.seen, std::vector<GuestRequest>{GuestRequest::Reset});
  EXPECT_EQ(in8(pm, AcpiPm::kResetOffset), 0);
}

TEST_F(AcpiPmTest, EventRegisters) {
  out16(pm, AcpiPm::kPm1aEnOffset, 0x0100);  // PWRBTN_EN
  EXPECT_EQ(in16(pm, AcpiPm::kPm1aEnOffset), 0x0100);
  out16(pm, AcpiPm::kPm1aStsOffset, 0xffff);  // write-1-to-clear: stays 0
  EXPECT_EQ(in16(pm, AcpiPm::kPm1aStsOffset), 0);
  // One 32-bit access covers STS and EN.
  const uint8_t both[4] = {0, 0, 0x20, 0x00};
  pm.write(AcpiPm::kPm1aStsOffset, both);
  EXPECT_EQ(in16(pm, AcpiPm::kPm1aEnOffset), 0x0020);
  uint8_t four[4] = {};
  pm.read(AcpiPm::kPm1aStsOffset, four);
  EXPECT_EQ(four[2], 0x20);
  EXPECT_EQ(in8(pm, 0x0c), 0xff) << "unimplemented ports read all-ones";
  EXPECT_TRUE(requests.seen.empty());
}

// --- pvpanic ----------------------------------------------------------------

TEST(Pvpanic, ReportsEventsAndPanics) {
  Requests requests;
  Pvpanic dev(requests.handler());
  EXPECT_EQ(in8(dev, 0), 0x03);
  out8(dev, 0, 0x00);
  out8(dev, 0, Pvpanic::kCrashLoaded);  // kdump will take over: not a panic for us
  EXPECT_TRUE(requests.seen.empty());
  out8(dev, 0, Pvpanic::kPanicked);
  EXPECT_EQ(requests.seen, std::vector<GuestRequest>{GuestRequest::Panic});
}

TEST(Pvpanic, EmptyHandlerIsFine) {
  Pvpanic dev(nullptr);
  out8(dev, 0, Pvpanic::kPanicked);
  I8042 kbc(nullptr);
  out8(kbc, I8042::kCommandOffset, 0xfe);
  AcpiPm pm(nullptr);
  out8(pm, AcpiPm::kResetOffset, x86::kAcpiResetValue);
}

}  // namespace
}  // namespace rz::devices
