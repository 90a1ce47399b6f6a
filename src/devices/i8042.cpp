#include "devices/i8042.h"

#include "x86/layout.h"

namespace rz::devices {

namespace {

constexpr uint8_t kCtrSystem = 0x04;
constexpr uint8_t kCtrKbdDisabled = 0x10;
constexpr uint8_t kCtrAuxDisabled = 0x20;

// Forwards a 1-byte port range to one fixed offset of the controller.
class I8042Port : public BusDevice {
 public:
  I8042Port(std::shared_ptr<I8042> dev, uint64_t offset)
      : dev_(std::move(dev)), offset_(offset) {}
  void read(uint64_t offset, std::span<uint8_t> data) override {
    dev_->read(offset_ + offset, data);
  }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    dev_->write(offset_ + offset, data);
  }

 private:
  const std::shared_ptr<I8042> dev_;
  const uint64_t offset_;
};

}  // namespace

I8042::I8042(GuestRequestHandler on_request) : on_request_(std::move(on_request)) {
  ram_[0] = kDefaultConfig;
}

void I8042::attach(Bus& pio, std::shared_ptr<I8042> dev) {
  pio.insert(std::make_shared<I8042Port>(dev, kDataOffset), x86::kI8042DataPort, 1,
             "i8042 data");
  pio.insert(std::make_shared<I8042Port>(dev, kCommandOffset), x86::kI8042CmdPort, 1,
             "i8042 command");
}

void I8042::read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < data.size(); ++i) data[i] = read_byte(offset + i);
}

void I8042::write(uint64_t offset, std::span<const uint8_t> data) {
  bool reset = false;
  {
    std::lock_guard lock(mu_);
    for (size_t i = 0; i < data.size(); ++i) reset |= write_byte(offset + i, data[i]);
  }
  if (reset && on_request_) on_request_(GuestRequest::Reset);
}

uint8_t I8042::read_byte(uint64_t offset) {
  if (offset == kDataOffset) {
    output_full_ = false;
    output_aux_ = false;
    return output_;  // stays readable, as on the chip
  }
  if (offset == kCommandOffset) {
    uint8_t status = kStatusUnlocked;
    if (output_full_) status |= kStatusOutputFull;
    if (output_full_ && output_aux_) status |= kStatusAuxData;
    if (ram_[0] & kCtrSystem) status |= kStatusSystem;
    if (last_was_command_) status |= kStatusCommand;
    return status;
  }
  return 0xff;
}

bool I8042::write_byte(uint64_t offset, uint8_t value) {
  if (offset == kDataOffset) {
    last_was_command_ = false;
    return data(value);
  }
  if (offset == kCommandOffset) {
    last_was_command_ = true;
    return command(value);
  }
  return false;
}

bool I8042::command(uint8_t cmd) {
  pending_ = 0;  // a new command abandons one still waiting for data
  if (cmd >= 0x20 && cmd <= 0x3f) {
    reply(ram_[cmd & 0x1f], false);
    return false;
  }
  if ((cmd >= 0x60 && cmd <= 0x7f) || cmd == 0xd1 || cmd == 0xd2 || cmd == 0xd3 ||
      cmd == 0xd4) {
    pending_ = cmd;
    return false;
  }
  if (cmd >= 0xf0) return !(cmd & 0x01);  // pulse; bit 0 is the reset line
  switch (cmd) {
    case 0xa7: ram_[0] |= kCtrAuxDisabled; break;
    case 0xa8: ram_[0] &= ~kCtrAuxDisabled; break;
    case 0xa9: reply(0x00, false); break;  // aux clock/data lines fine
    case 0xaa:
      ram_[0] |= kCtrSystem;
      reply(0x55, false);
      break;
    case 0xab: reply(0x00, false); break;  // keyboard lines fine
    case 0xad: ram_[0] |= kCtrKbdDisabled; break;
    case 0xae: ram_[0] &= ~kCtrKbdDisabled; break;
    case 0xd0: reply(output_port_, false); break;
    default: break;
  }
  return false;
}

bool I8042::data(uint8_t value) {
  const uint8_t cmd = pending_;
  pending_ = 0;
  if (cmd >= 0x60 && cmd <= 0x7f) {
    ram_[cmd & 0x1f] = value;
  } else if (cmd == 0xd1) {
    output_port_ = value;
    return !(value & 0x01);
  } else if (cmd == 0xd2) {
    reply(value, false);
  } else if (cmd == 0xd3) {
    reply(value, true);
  }
  // 0xd4 (to the mouse) and plain data (to the keyboard): nobody listens.
  return false;
}

void I8042::reply(uint8_t value, bool aux) {
  output_ = value;
  output_full_ = true;
  output_aux_ = aux;
}

}  // namespace rz::devices
