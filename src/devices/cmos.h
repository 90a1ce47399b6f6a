// The PC's CMOS RAM and MC146818-style real-time clock: 128 bytes behind an
// index port (0x70; bit 7, the NMI mask, is ignored) and a data port (0x71).
//
// Clock: the time registers (0x00 seconds, 0x02 minutes, 0x04 hours,
// 0x06 day of week, 0x07 day, 0x08 month, 0x09 year, 0x32 century) show the
// host clock in UTC plus an offset, encoded per register B: BCD unless DM
// (bit 2) is set, 12-hour (PM in bit 7) unless 24h (bit 1) is set. Guest
// writes to them are kept: the written date/time becomes the new offset from
// the host clock. The usual way is to set SET (register B bit 7), write the
// fields and clear SET; while SET is on, the clock reads back the frozen,
// written values. A write that leaves the date/time invalid (bad BCD, month
// 13, ...) is dropped; the day of week is always derived from the date.
// Register A reads 0x26 with UIP (bit 7) always 0 (an update never seems to
// be in progress); register C reads 0 (no interrupts are modelled); register
// D reads 0x80 (RAM and time valid). The alarm registers are plain RAM.
//
// Memory size bytes, as a PC BIOS (and QEMU, for 0x5b-0x5d) leaves them:
//   0x15/0x16  base memory in KiB (640)
//   0x17/0x18  extended memory above 1 MiB in KiB, capped at 0xffff
//   0x30/0x31  the same
//   0x34/0x35  memory between 16 MiB and 4 GiB in 64 KiB units, capped
//   0x5b-0x5d  memory above 4 GiB in 64 KiB units (24 bits, capped)
// All other bytes start at 0 and are plain read/write RAM.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>

#include "devices/bus_device.h"

namespace rz::devices {

class Cmos : public BusDevice {
 public:
  // Host time as seconds since the Unix epoch (UTC).
  using Clock = std::function<int64_t()>;

  static constexpr uint64_t kIndexOffset = 0;  // port 0x70
  static constexpr uint64_t kDataOffset = 1;   // port 0x71

  // `ram_below_4g_bytes` counts all RAM under 4 GiB (from address 0),
  // `ram_above_4g_bytes` the RAM from 4 GiB up. An empty `clock` means the
  // host's system clock.
  Cmos(uint64_t ram_below_4g_bytes, uint64_t ram_above_4g_bytes, Clock clock = {});

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  // The clock in binary fields.
  struct DateTime {
    int year = 1970;  // full year
    int month = 1;    // 1-12
    int day = 1;      // 1-31
    int hour = 0, minute = 0, second = 0;
  };

  uint8_t read_data();
  void write_data(uint8_t value);
  DateTime now() const;  // the guest's clock right now (frozen while SET)
  static DateTime from_epoch(int64_t seconds);
  static bool to_epoch(const DateTime& t, int64_t* seconds);
  uint8_t encode(int value) const;       // binary -> BCD or binary per DM
  bool decode(uint8_t raw, int* value) const;
  uint8_t encode_hour(int hour) const;   // 0-23 -> register format
  bool decode_hour(uint8_t raw, int* hour) const;

  const Clock clock_;

  std::mutex mu_;
  std::array<uint8_t, 128> ram_{};
  uint8_t index_ = 0;
  int64_t offset_ = 0;  // guest time minus host time, seconds
  DateTime frozen_;     // what the clock shows while SET is on
};

}  // namespace rz::devices
