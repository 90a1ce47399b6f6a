// The PC's i8042 keyboard controller, reduced to what a guest needs without a
// keyboard or mouse: the controller commands Linux issues while probing, and
// the reset line (command 0xFE, the classic way to reboot a PC).
//
// Ports: 0x60 (data) and 0x64 (status on read, command on write). Port 0x61
// between them belongs to the PIT's speaker gate, which KVM emulates in the
// kernel, so the controller is NOT one range 0x60..0x64: attach() inserts it
// as two 1-byte ranges. The device's own offsets are relative to 0x60
// (0 = data, 4 = status/command), which is what attach() forwards.
//
// Commands (port 0x64):
//   0x20-0x3f read controller RAM byte (0x20: configuration byte, CTR)
//   0x60-0x7f write controller RAM byte with the next data byte (0x60: CTR)
//   0xa7/0xa8 disable/enable the aux port (CTR bit 5)
//   0xa9      aux interface test -> 0x00      0xab kbd interface test -> 0x00
//   0xaa      controller self-test -> 0x55 (and sets the system flag)
//   0xad/0xae disable/enable the keyboard port (CTR bit 4)
//   0xd0      read output port                0xd1 write output port (next
//             data byte; bit 0 clear asserts the CPU reset line -> Reset)
//   0xd2/0xd3 next data byte comes back as keyboard / aux input (loopback)
//   0xd4      next data byte goes to the (absent) mouse: dropped
//   0xf0-0xff pulse output port bits 0-3 low for each clear bit of the low
//             nibble; bit 0 is the reset line, so 0xfe (and any even value)
//             -> GuestRequest::Reset
// Other commands, and data bytes for the absent keyboard, are ignored.
// Replies wait in a one-byte output buffer (status bit 0, plus bit 5 when
// the byte is from the aux side) until the guest reads port 0x60. The input
// buffer is never busy (status bit 1 reads 0). No interrupts are raised.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>

#include "devices/bus.h"
#include "devices/bus_device.h"

namespace rz::devices {

class I8042 : public BusDevice {
 public:
  static constexpr uint64_t kDataOffset = 0;
  static constexpr uint64_t kCommandOffset = 4;  // 0x64 - 0x60

  // Status register bits.
  static constexpr uint8_t kStatusOutputFull = 0x01;
  static constexpr uint8_t kStatusInputFull = 0x02;
  static constexpr uint8_t kStatusSystem = 0x04;
  static constexpr uint8_t kStatusCommand = 0x08;  // last write was to 0x64
  static constexpr uint8_t kStatusUnlocked = 0x10;
  static constexpr uint8_t kStatusAuxData = 0x20;

  // The configuration byte (CTR) the firmware leaves: keyboard interrupt,
  // system flag, scancode translation; both ports enabled.
  static constexpr uint8_t kDefaultConfig = 0x45;

  // `on_request` receives GuestRequest::Reset; it is called without the
  // device's lock held and may be empty.
  explicit I8042(GuestRequestHandler on_request);

  // Offsets are relative to port 0x60: kDataOffset or kCommandOffset. Other
  // offsets read as 0xff and ignore writes.
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  // Inserts `dev` into a PIO bus at kI8042DataPort and kI8042CmdPort, one
  // byte each, named "i8042 data" and "i8042 command".
  static void attach(Bus& pio, std::shared_ptr<I8042> dev);

 private:
  uint8_t read_byte(uint64_t offset);
  // Returns true when the guest asked for a reset.
  bool write_byte(uint64_t offset, uint8_t value);
  bool command(uint8_t cmd);
  bool data(uint8_t value);
  void reply(uint8_t value, bool aux);

  const GuestRequestHandler on_request_;

  std::mutex mu_;
  std::array<uint8_t, 32> ram_{};  // ram_[0] is the CTR
  uint8_t output_port_ = 0x03;     // reset line inactive, A20 enabled
  uint8_t output_ = 0;             // output buffer
  bool output_full_ = false;
  bool output_aux_ = false;
  bool last_was_command_ = false;
  uint8_t pending_ = 0;            // command waiting for its data byte, or 0
};

}  // namespace rz::devices
