// A 16550A UART (the PC's COM ports): eight byte-wide registers, a 16-byte
// receive FIFO and one interrupt line.
//
// Model:
// - Transmission is instantaneous: a byte written to THR goes straight to the
//   output sink (or, in loopback mode, into the receive FIFO), so LSR.THRE and
//   LSR.TEMT always read 1 and the "THR empty" interrupt is re-armed after
//   every write to THR.
// - Receive: bytes come from enqueue_input() (another thread) into the FIFO,
//   which holds 16 bytes with FIFOs enabled and 1 byte (RBR) without. Input
//   that does not fit is refused, never dropped or buffered without bound:
//   enqueue_input() returns how much it took, and the optional space callback
//   tells the producer when the guest has made room again.
// - Interrupts, highest priority first (IIR identification):
//     0x06 line status   IER.ELSI  and an overrun is latched (loopback only)
//     0x04 rx data       IER.ERBFI and the FIFO holds >= the trigger level
//     0x0C rx timeout    IER.ERBFI and the FIFO holds fewer bytes than that;
//                        input arrives in whole batches, so the character
//                        timeout is taken to have expired at once
//     0x02 THR empty     IER.ETBEI and the THRE interrupt is pending: set after
//                        each transmit and when ETBEI goes 0 -> 1, cleared by
//                        an IIR read that reports it or a write to THR
//     0x00 modem status  IER.EDSSI and an MSR delta bit is set
//   The IRQ line is high while an interrupt is pending, MCR.OUT2 is set and
//   loopback is off (on a PC, OUT2 drives the IRQ gate and loopback forces the
//   OUT pins inactive). set_level() is only called when the level changes.
// - Modem lines: outside loopback the far end is always present
//   (CTS, DSR and DCD set, RI clear); in loopback they follow MCR as on the
//   chip (RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD). External input is refused
//   while loopback is on.
// - The divisor latch, LCR and SCR are plain storage: there is no baud rate.
//
// Callbacks (the output sink, IrqLine::set_level) run with the device's lock
// held, so the order of output bytes and of line levels matches the order of
// guest accesses; they must not call back into the device. The space
// callback runs without the lock and may call enqueue_input().
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "devices/bus_device.h"

namespace rz::devices {

class Uart16550 : public BusDevice {
 public:
  // Receives transmitted bytes (one call per THR write).
  using OutputSink = std::function<void(std::span<const uint8_t>)>;

  static constexpr size_t kRegisterCount = 8;  // size of the port range
  static constexpr size_t kFifoSize = 16;

  // Register offsets.
  static constexpr uint8_t kRbrThr = 0;  // DLL when LCR.DLAB
  static constexpr uint8_t kIer = 1;     // DLM when LCR.DLAB
  static constexpr uint8_t kIirFcr = 2;
  static constexpr uint8_t kLcr = 3;
  static constexpr uint8_t kMcr = 4;
  static constexpr uint8_t kLsr = 5;
  static constexpr uint8_t kMsr = 6;
  static constexpr uint8_t kScr = 7;

  // Everything a snapshot needs. Values are register images; set_state()
  // masks reserved bits and refuses more FIFO bytes than the FIFO holds.
  struct State {
    uint8_t dll = 0x0c;  // divisor 12: 9600 baud
    uint8_t dlm = 0;
    uint8_t ier = 0;
    uint8_t fcr = 0;  // FIFO enable, DMA mode and trigger bits as last written
    uint8_t lcr = 0;
    uint8_t mcr = 0;
    uint8_t scr = 0;
    bool overrun = false;      // LSR.OE latched
    uint8_t msr_deltas = 0;    // MSR bits 0-3
    bool thre_pending = false; // THR-empty interrupt armed
    std::vector<uint8_t> rx_fifo;  // oldest byte first
  };

  // `irq` may be null (a polled port). `on_input_space`, if set, is called
  // when room appears for input that enqueue_input() refused earlier.
  Uart16550(std::shared_ptr<IrqLine> irq, OutputSink sink,
            std::function<void()> on_input_space = {});

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  // Queues bytes for the guest to receive; returns how many were accepted
  // (a prefix of `bytes`). Thread-safe.
  size_t enqueue_input(std::span<const uint8_t> bytes);
  // How many bytes enqueue_input() would accept right now.
  size_t input_space() const;

  State state() const;
  // Restores a snapshot and drives the IRQ line to the restored level (always
  // calls set_level once, since the line's previous level is unknown).
  // Throws rz::Error if the state is malformed.
  void set_state(const State& s);
  // Power-on state; drives the IRQ line low if it was high.
  void reset();

 private:
  uint8_t read_reg(uint8_t reg);
  void write_reg(uint8_t reg, uint8_t value);
  void transmit(uint8_t byte);
  void set_mcr(uint8_t value);
  uint8_t modem_status() const;  // MSR bits 4-7
  uint8_t iir() const;
  size_t fifo_capacity() const;
  size_t trigger_level() const;
  void fifo_clear();
  bool fifo_push(uint8_t byte);
  bool irq_wanted() const;
  void update_irq();
  // True (once) when a refused producer should be told there is room.
  bool take_space_notice();

  const std::shared_ptr<IrqLine> irq_;
  const OutputSink sink_;
  const std::function<void()> on_input_space_;

  mutable std::mutex mu_;
  uint8_t dll_ = 0x0c, dlm_ = 0, ier_ = 0, fcr_ = 0, lcr_ = 0, mcr_ = 0,
          scr_ = 0;
  bool overrun_ = false;
  uint8_t msr_deltas_ = 0;
  bool thre_pending_ = false;
  std::array<uint8_t, kFifoSize> fifo_{};
  size_t fifo_head_ = 0, fifo_count_ = 0;
  uint8_t last_rx_ = 0;         // RBR reads this when the FIFO is empty
  bool input_refused_ = false;  // a producer is waiting for space
  bool irq_level_ = false;
};

}  // namespace rz::devices
