// The interface every emulated device behind a Bus implements, and the two
// ways a device talks back to the machine: interrupt lines and guest requests.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

namespace rz::devices {

// A device occupying a range of a PIO or MMIO bus. `offset` is relative to
// the start of the range it was inserted at. Accesses come from vCPU threads,
// possibly several at once: a device with state protects it itself.
// Reads must fill all of `data` (unimplemented registers read as all-ones).
class BusDevice {
 public:
  virtual ~BusDevice() = default;
  virtual void read(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

// One interrupt input of the machine's interrupt controller (a GSI).
// set_level(true/false) drives a level; an edge device pulses it.
class IrqLine {
 public:
  virtual ~IrqLine() = default;
  virtual void set_level(bool high) = 0;
  void pulse() {
    set_level(true);
    set_level(false);
  }
};

// What a guest can ask of the machine through a device.
enum class GuestRequest { PowerOff, Reset, Panic };
using GuestRequestHandler = std::function<void(GuestRequest)>;

}  // namespace rz::devices
