#include "devices/acpi_pm.h"

#include <optional>

#include "x86/layout.h"

namespace rz::devices {

namespace {

// The bytes of a 16-bit register at `reg` that an access [offset, offset+len)
// covers: the value those bytes carry and a mask of them.
struct Part {
  uint16_t value = 0;
  uint16_t mask = 0;
};

Part part_of(uint64_t reg, uint64_t offset, std::span<const uint8_t> data) {
  Part p;
  for (uint64_t b = 0; b < 2; ++b) {
    const uint64_t addr = reg + b;
    if (addr < offset || addr - offset >= data.size()) continue;
    p.value |= static_cast<uint16_t>(data[addr - offset] << (8 * b));
    p.mask |= static_cast<uint16_t>(0xff << (8 * b));
  }
  return p;
}

}  // namespace

AcpiPm::AcpiPm(GuestRequestHandler on_request) : on_request_(std::move(on_request)) {}

void AcpiPm::read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < data.size(); ++i) {
    const uint64_t addr = offset + i;
    const unsigned shift = 8 * (addr & 1);
    switch (addr & ~uint64_t{1}) {
      case kPm1aStsOffset: data[i] = static_cast<uint8_t>(sts_ >> shift); break;
      case kPm1aEnOffset: data[i] = static_cast<uint8_t>(en_ >> shift); break;
      case kPm1aCntOffset:
        data[i] = static_cast<uint8_t>((cnt_ | kCntSciEn) >> shift);
        break;
      default: data[i] = addr == kResetOffset ? 0 : 0xff; break;
    }
  }
}

void AcpiPm::write(uint64_t offset, std::span<const uint8_t> data) {
  std::optional<GuestRequest> request;
  {
    std::lock_guard lock(mu_);
    const Part sts = part_of(kPm1aStsOffset, offset, data);
    sts_ &= static_cast<uint16_t>(~(sts.value & sts.mask));

    const Part en = part_of(kPm1aEnOffset, offset, data);
    en_ = static_cast<uint16_t>((en_ & ~en.mask) | (en.value & en.mask));

    const Part cnt = part_of(kPm1aCntOffset, offset, data);
    if (cnt.mask) {
      const uint16_t v = static_cast<uint16_t>((cnt_ & ~cnt.mask) | (cnt.value & cnt.mask));
      if ((v & kCntSlpEn) &&
          ((v & kCntSlpTypMask) >> kCntSlpTypShift) == x86::kSlpTypS5)
        request = GuestRequest::PowerOff;
      cnt_ = static_cast<uint16_t>((v & ~kCntSlpEn) | kCntSciEn);
    }

    if (offset <= kResetOffset && kResetOffset - offset < data.size() &&
        data[kResetOffset - offset] == x86::kAcpiResetValue)
      request = GuestRequest::Reset;
  }
  if (request && on_request_) on_request_(*request);
}

}  // namespace rz::devices
