// The ACPI fixed-hardware register block (PM1a event and control registers
// and the FADT's RESET_REG), 16 ports at x86::kAcpiPmBase:
//   +0 PM1a_STS (16 bits, write 1 to clear)   +2 PM1a_EN (16 bits)
//   +4 PM1a_CNT (16 bits)                      +8 RESET_REG (8 bits)
// Everything else in the block reads as all-ones and ignores writes.
//
// PM1a_CNT: SCI_EN (bit 0) always reads 1, since there is no SMI_CMD port and
// so no legacy mode to leave. Writing SLP_EN (bit 13) with SLP_TYP (bits
// 10-12) == x86::kSlpTypS5 asks for GuestRequest::PowerOff; other sleep types
// are ignored (the guest simply continues). SLP_EN itself reads 0.
// RESET_REG: writing x86::kAcpiResetValue asks for GuestRequest::Reset; it
// reads 0.
// Nothing sets status bits (no power button, PM timer or wake events are
// modelled), so no SCI is ever raised.
//
// Accesses of 1, 2 or 4 bytes at any offset work: each byte lands in the
// register that holds it, and one access updates each register once.
#pragma once

#include <cstdint>
#include <mutex>
#include <span>

#include "devices/bus_device.h"

namespace rz::devices {

class AcpiPm : public BusDevice {
 public:
  static constexpr uint64_t kSize = 16;
  static constexpr uint64_t kPm1aStsOffset = 0;
  static constexpr uint64_t kPm1aEnOffset = 2;
  static constexpr uint64_t kPm1aCntOffset = 4;
  static constexpr uint64_t kResetOffset = 8;

  static constexpr uint16_t kCntSciEn = 1u << 0;
  static constexpr uint16_t kCntSlpTypShift = 10;
  static constexpr uint16_t kCntSlpTypMask = 7u << kCntSlpTypShift;
  static constexpr uint16_t kCntSlpEn = 1u << 13;

  // `on_request` receives PowerOff and Reset; it is called without the
  // device's lock held and may be empty.
  explicit AcpiPm(GuestRequestHandler on_request);

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  const GuestRequestHandler on_request_;

  std::mutex mu_;
  uint16_t sts_ = 0;
  uint16_t en_ = 0;
  uint16_t cnt_ = kCntSciEn;
};

}  // namespace rz::devices
