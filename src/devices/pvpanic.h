// QEMU's pvpanic ISA device: one port (x86::kPvpanicPort) through which a
// guest reports that it panicked. A read returns the events the device
// supports; a write reports events:
//   bit 0 PANICKED      -> GuestRequest::Panic
//   bit 1 CRASH_LOADED  -> ignored: the guest panicked but has a crash kernel
//                          loaded and will reboot into it by itself, so the
//                          machine keeps running
// Other bits are ignored. The device has no state.
#pragma once

#include <cstdint>
#include <span>

#include "devices/bus_device.h"

namespace rz::devices {

class Pvpanic : public BusDevice {
 public:
  static constexpr uint8_t kPanicked = 0x01;
  static constexpr uint8_t kCrashLoaded = 0x02;
  static constexpr uint8_t kSupportedEvents = kPanicked | kCrashLoaded;

  // `on_request` receives GuestRequest::Panic; it may be empty.
  explicit Pvpanic(GuestRequestHandler on_request);

  // The device is one byte wide: offset 0 is the register, any other byte of
  // an access reads as 0xff and is ignored on writes.
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  const GuestRequestHandler on_request_;
};

}  // namespace rz::devices
