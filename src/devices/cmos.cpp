#include "devices/cmos.h"

#include <algorithm>
#include <chrono>

#include "x86/layout.h"

namespace rz::devices {

namespace {

// Register indices.
constexpr uint8_t kSeconds = 0x00;
constexpr uint8_t kMinutes = 0x02;
constexpr uint8_t kHours = 0x04;
constexpr uint8_t kWeekday = 0x06;
constexpr uint8_t kDay = 0x07;
constexpr uint8_t kMonth = 0x08;
constexpr uint8_t kYear = 0x09;
constexpr uint8_t kRegA = 0x0a;
constexpr uint8_t kRegB = 0x0b;
constexpr uint8_t kRegC = 0x0c;
constexpr uint8_t kRegD = 0x0d;
constexpr uint8_t kCentury = 0x32;

constexpr uint8_t kRegAUip = 0x80;
constexpr uint8_t kRegADefault = 0x26;  // 32.768 kHz time base, 1024 Hz rate
constexpr uint8_t kRegBSet = 0x80;
constexpr uint8_t kRegBBinary = 0x04;  // DM
constexpr uint8_t kRegB24h = 0x02;
constexpr uint8_t kRegBDefault = kRegB24h;
constexpr uint8_t kRegDValid = 0x80;
constexpr uint8_t kHourPm = 0x80;

bool is_time_register(uint8_t index) {
  switch (index) {
    case kSeconds: case kMinutes: case kHours: case kWeekday:
    case kDay: case kMonth: case kYear: case kCentury:
      return true;
    default:
      return false;
  }
}

void put16(std::array<uint8_t, 128>& ram, uint8_t index, uint64_t value) {
  ram[index] = static_cast<uint8_t>(value);
  ram[index + 1] = static_cast<uint8_t>(value >> 8);
}

int64_t system_clock_seconds() {
  using namespace std::chrono;
  return duration_cast<seconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace

Cmos::Cmos(uint64_t ram_below_4g_bytes, uint64_t ram_above_4g_bytes, Clock clock)
    : clock_(clock ? std::move(clock) : Clock(system_clock_seconds)) {
  using x86::KiB;
  using x86::MiB;
  constexpr uint64_t k64KiB = 64 * KiB;
  const uint64_t below = ram_below_4g_bytes;

  put16(ram_, 0x15, std::min<uint64_t>(640, below / KiB));
  const uint64_t ext_kib = below > MiB ? std::min<uint64_t>((below - MiB) / KiB, 0xffff) : 0;
  put16(ram_, 0x17, ext_kib);
  put16(ram_, 0x30, ext_kib);
  const uint64_t mid = below > 16 * MiB
                           ? std::min<uint64_t>((below - 16 * MiB) / k64KiB, 0xffff)
                           : 0;
  put16(ram_, 0x34, mid);
  const uint64_t high = std::min<uint64_t>(ram_above_4g_bytes / k64KiB, 0xffffff);
  ram_[0x5b] = static_cast<uint8_t>(high);
  ram_[0x5c] = static_cast<uint8_t>(high >> 8);
  ram_[0x5d] = static_cast<uint8_t>(high >> 16);

  ram_[kRegA] = kRegADefault;
  ram_[kRegB] = kRegBDefault;
  ram_[kRegD] = kRegDValid;
}

void Cmos::read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < data.size(); ++i) {
    // The index port is write-only.
    data[i] = offset + i == kDataOffset ? read_data() : 0xff;
  }
}

void Cmos::write(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < data.size(); ++i) {
    if (offset + i == kIndexOffset) {
      index_ = data[i] & 0x7f;  // bit 7 masks NMIs on a PC; nothing to mask here
    } else if (offset + i == kDataOffset) {
      write_data(data[i]);
    }
  }
}

uint8_t Cmos::read_data() {
  switch (index_) {
    case kRegA: return ram_[kRegA] & ~kRegAUip;
    case kRegC: return 0;
    case kRegD: return kRegDValid;
    default: break;
  }
  if (!is_time_register(index_)) return ram_[index_];
  const DateTime t = now();
  switch (index_) {
    case kSeconds: return encode(t.second);
    case kMinutes: return encode(t.minute);
    case kHours: return encode_hour(t.hour);
    case kWeekday: {
      using namespace std::chrono;
      const year_month_day ymd{year{t.year}, month{static_cast<unsigned>(t.month)},
                               day{static_cast<unsigned>(t.day)}};
      return encode(static_cast<int>(weekday{sys_days{ymd}}.c_encoding()) + 1);
    }
    case kDay: return encode(t.day);
    case kMonth: return encode(t.month);
    case kYear: return encode(t.year % 100);
    case kCentury: return encode(t.year / 100);
  }
  return 0xff;
}

void Cmos::write_data(uint8_t value) {
  switch (index_) {
    case kRegA:
      ram_[kRegA] = value & ~kRegAUip;
      return;
    case kRegB: {
      const bool was_set = ram_[kRegB] & kRegBSet;
      const bool set = value & kRegBSet;
      if (!was_set && set) frozen_ = now();
      ram_[kRegB] = value;
      if (was_set && !set) {
        int64_t seconds = 0;
        if (to_epoch(frozen_, &seconds)) offset_ = seconds - clock_();
      }
      return;
    }
    case kRegC:
    case kRegD:
      return;  // read-only
    default:
      break;
  }
  if (!is_time_register(index_)) {
    ram_[index_] = value;
    return;
  }
  DateTime t = now();
  int v = 0;
  bool ok = true;
  switch (index_) {
    case kSeconds: ok = decode(value, &v) && v < 60; t.second = v; break;
    case kMinutes: ok = decode(value, &v) && v < 60; t.minute = v; break;
    case kHours: ok = decode_hour(value, &v); t.hour = v; break;
    case kWeekday: return;  // derived from the date
    case kDay: ok = decode(value, &v) && v >= 1 && v <= 31; t.day = v; break;
    case kMonth: ok = decode(value, &v) && v >= 1 && v <= 12; t.month = v; break;
    case kYear: ok = decode(value, &v) && v < 100; t.year = t.year / 100 * 100 + v; break;
    case kCentury: ok = decode(value, &v) && v < 100; t.year = v * 100 + t.year % 100; break;
  }
  if (!ok) return;
  if (ram_[kRegB] & kRegBSet) {
    frozen_ = t;  // validated as a whole when SET is cleared
    return;
  }
  int64_t seconds = 0;
  if (to_epoch(t, &seconds)) offset_ = seconds - clock_();
}

Cmos::DateTime Cmos::now() const {
  if (ram_[kRegB] & kRegBSet) return frozen_;
  return from_epoch(clock_() + offset_);
}

Cmos::DateTime Cmos::from_epoch(int64_t seconds) {
  using namespace std::chrono;
  const sys_seconds tp{std::chrono::seconds{seconds}};
  const sys_days d = floor<days>(tp);
  const year_month_day ymd{d};
  const hh_mm_ss hms{tp - d};
  DateTime t;
  t.year = static_cast<int>(ymd.year());
  t.month = static_cast<int>(static_cast<unsigned>(ymd.month()));
  t.day = static_cast<int>(static_cast<unsigned>(ymd.day()));
  t.hour = static_cast<int>(hms.hours().count());
  t.minute = static_cast<int>(hms.minutes().count());
  t.second = static_cast<int>(hms.seconds().count());
  return t;
}

bool Cmos::to_epoch(const DateTime& t, int64_t* seconds) {
  using namespace std::chrono;
  if (t.month < 1 || t.month > 12 || t.day < 1 || t.day > 31) return false;
  if (t.hour < 0 || t.hour > 23 || t.minute < 0 || t.minute > 59 || t.second < 0 ||
      t.second > 59)
    return false;
  const year_month_day ymd{year{t.year}, month{static_cast<unsigned>(t.month)},
                           day{static_cast<unsigned>(t.day)}};
  if (!ymd.ok()) return false;  // e.g. 31 April
  const sys_seconds tp = sys_days{ymd} + hours{t.hour} + minutes{t.minute} +
                         std::chrono::seconds{t.second};
  *seconds = tp.time_since_epoch().count();
  return true;
}

uint8_t Cmos::encode(int value) const {
  if (ram_[kRegB] & kRegBBinary) return static_cast<uint8_t>(value);
  return static_cast<uint8_t>((value / 10 % 10) << 4 | value % 10);
}

bool Cmos::decode(uint8_t raw, int* value) const {
  if (ram_[kRegB] & kRegBBinary) {
    *value = raw;
    return true;
  }
  if ((raw & 0x0f) > 9 || (raw >> 4) > 9) return false;
  *value = (raw >> 4) * 10 + (raw & 0x0f);
  return true;
}

uint8_t Cmos::encode_hour(int hour) const {
  if (ram_[kRegB] & kRegB24h) return encode(hour);
  const int h12 = hour % 12 == 0 ? 12 : hour % 12;
  return encode(h12) | (hour >= 12 ? kHourPm : 0);
}

bool Cmos::decode_hour(uint8_t raw, int* hour) const {
  if (ram_[kRegB] & kRegB24h) return decode(raw, hour) && *hour < 24;
  int h12 = 0;
  if (!decode(raw & ~kHourPm, &h12) || h12 < 1 || h12 > 12) return false;
  *hour = h12 % 12 + ((raw & kHourPm) ? 12 : 0);
  return true;
}

}  // namespace rz::devices
