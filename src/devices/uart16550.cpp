#include "devices/uart16550.h"

#include <algorithm>
#include <string>

#include "util/error.h"

namespace rz::devices {

namespace {

// IER
constexpr uint8_t kIerRda = 0x01;   // ERBFI: received data available
constexpr uint8_t kIerThre = 0x02;  // ETBEI: THR empty
constexpr uint8_t kIerRls = 0x04;   // ELSI: receiver line status
constexpr uint8_t kIerMsi = 0x08;   // EDSSI: modem status
constexpr uint8_t kIerMask = 0x0f;

// IIR
constexpr uint8_t kIirNoInt = 0x01;
constexpr uint8_t kIirMsi = 0x00;
constexpr uint8_t kIirThre = 0x02;
constexpr uint8_t kIirRda = 0x04;
constexpr uint8_t kIirRls = 0x06;
constexpr uint8_t kIirTimeout = 0x0c;
constexpr uint8_t kIirFifoEnabled = 0xc0;

// FCR
constexpr uint8_t kFcrEnable = 0x01;
constexpr uint8_t kFcrClearRx = 0x02;
constexpr uint8_t kFcrDma = 0x08;
constexpr uint8_t kFcrTriggerMask = 0xc0;
constexpr uint8_t kFcrStoredMask = kFcrEnable | kFcrDma | kFcrTriggerMask;

// LCR
constexpr uint8_t kLcrDlab = 0x80;

// MCR
constexpr uint8_t kMcrDtr = 0x01;
constexpr uint8_t kMcrRts = 0x02;
constexpr uint8_t kMcrOut1 = 0x04;
constexpr uint8_t kMcrOut2 = 0x08;
constexpr uint8_t kMcrLoop = 0x10;
constexpr uint8_t kMcrMask = 0x1f;

// LSR
constexpr uint8_t kLsrDr = 0x01;
constexpr uint8_t kLsrOe = 0x02;
constexpr uint8_t kLsrThre = 0x20;
constexpr uint8_t kLsrTemt = 0x40;

// MSR
constexpr uint8_t kMsrDcts = 0x01;
constexpr uint8_t kMsrDdsr = 0x02;
constexpr uint8_t kMsrTeri = 0x04;
constexpr uint8_t kMsrDdcd = 0x08;
constexpr uint8_t kMsrDeltaMask = 0x0f;
constexpr uint8_t kMsrCts = 0x10;
constexpr uint8_t kMsrDsr = 0x20;
constexpr uint8_t kMsrRi = 0x40;
constexpr uint8_t kMsrDcd = 0x80;

}  // namespace

Uart16550::Uart16550(std::shared_ptr<IrqLine> irq, OutputSink sink,
                     std::function<void()> on_input_space)
    : irq_(std::move(irq)),
      sink_(std::move(sink)),
      on_input_space_(std::move(on_input_space)) {}

void Uart16550::read(uint64_t offset, std::span<uint8_t> data) {
  bool notify = false;
  {
    std::lock_guard lock(mu_);
    for (size_t i = 0; i < data.size(); ++i) {
      const uint64_t reg = offset + i;
      data[i] = reg < kRegisterCount ? read_reg(static_cast<uint8_t>(reg)) : 0xff;
    }
    update_irq();
    notify = take_space_notice();
  }
  if (notify && on_input_space_) on_input_space_();
}

void Uart16550::write(uint64_t offset, std::span<const uint8_t> data) {
  bool notify = false;
  {
    std::lock_guard lock(mu_);
    for (size_t i = 0; i < data.size(); ++i) {
      const uint64_t reg = offset + i;
      if (reg < kRegisterCount) write_reg(static_cast<uint8_t>(reg), data[i]);
    }
    update_irq();
    notify = take_space_notice();
  }
  if (notify && on_input_space_) on_input_space_();
}

uint8_t Uart16550::read_reg(uint8_t reg) {
  const bool dlab = lcr_ & kLcrDlab;
  switch (reg) {
    case kRbrThr:
      if (dlab) return dll_;
      if (fifo_count_ > 0) {
        last_rx_ = fifo_[fifo_head_];
        fifo_head_ = (fifo_head_ + 1) % kFifoSize;
        --fifo_count_;
      }
      return last_rx_;
    case kIer:
      return dlab ? dlm_ : ier_;
    case kIirFcr: {
      const uint8_t v = iir();
      // Reading IIR acknowledges a THRE interrupt when that is what it shows.
      if ((v & 0x0f) == kIirThre) thre_pending_ = false;
      return v;
    }
    case kLcr:
      return lcr_;
    case kMcr:
      return mcr_;
    case kLsr: {
      uint8_t v = kLsrThre | kLsrTemt;
      if (fifo_count_ > 0) v |= kLsrDr;
      if (overrun_) v |= kLsrOe;
      overrun_ = false;  // error bits clear on read
      return v;
    }
    case kMsr: {
      const uint8_t v = modem_status() | msr_deltas_;
      msr_deltas_ = 0;
      return v;
    }
    case kScr:
      return scr_;
  }
  return 0xff;
}

void Uart16550::write_reg(uint8_t reg, uint8_t value) {
  const bool dlab = lcr_ & kLcrDlab;
  switch (reg) {
    case kRbrThr:
      if (dlab) {
        dll_ = value;
      } else {
        transmit(value);
      }
      break;
    case kIer:
      if (dlab) {
        dlm_ = value;
      } else {
        const uint8_t old = ier_;
        ier_ = value & kIerMask;
        // Enabling the THRE interrupt while THR is empty (always, here)
        // raises it at once.
        if (!(old & kIerThre) && (ier_ & kIerThre)) thre_pending_ = true;
      }
      break;
    case kIirFcr: {
      const uint8_t old = fcr_;
      // Toggling the FIFO enable bit resets both FIFOs; with FIFOs off the
      // other bits cannot be programmed.
      if ((old ^ value) & kFcrEnable) fifo_clear();
      if (!(value & kFcrEnable)) {
        fcr_ = 0;
        break;
      }
      if (value & kFcrClearRx) fifo_clear();
      // Clearing the transmit FIFO has nothing to do: it is always empty.
      fcr_ = value & kFcrStoredMask;
      break;
    }
    case kLcr:
      lcr_ = value;
      break;
    case kMcr:
      set_mcr(value & kMcrMask);
      break;
    case kLsr:
    case kMsr:
      break;  // read-only (writable on the chip only for factory tests)
    case kScr:
      scr_ = value;
      break;
  }
}

void Uart16550::transmit(uint8_t byte) {
  if (mcr_ & kMcrLoop) {
    if (!fifo_push(byte)) overrun_ = true;
  } else if (sink_) {
    sink_(std::span<const uint8_t>(&byte, 1));
  }
  // The byte has left THR at once: the THR-empty interrupt is armed again.
  thre_pending_ = true;
}

void Uart16550::set_mcr(uint8_t value) {
  const uint8_t before = modem_status();
  mcr_ = value;
  const uint8_t after = modem_status();
  const uint8_t changed = before ^ after;
  if (changed & kMsrCts) msr_deltas_ |= kMsrDcts;
  if (changed & kMsrDsr) msr_deltas_ |= kMsrDdsr;
  if (changed & kMsrDcd) msr_deltas_ |= kMsrDdcd;
  if ((before & kMsrRi) && !(after & kMsrRi)) msr_deltas_ |= kMsrTeri;
}

uint8_t Uart16550::modem_status() const {
  if (!(mcr_ & kMcrLoop)) return kMsrCts | kMsrDsr | kMsrDcd;
  uint8_t v = 0;
  if (mcr_ & kMcrRts) v |= kMsrCts;
  if (mcr_ & kMcrDtr) v |= kMsrDsr;
  if (mcr_ & kMcrOut1) v |= kMsrRi;
  if (mcr_ & kMcrOut2) v |= kMsrDcd;
  return v;
}

uint8_t Uart16550::iir() const {
  const uint8_t fifo_bits = (fcr_ & kFcrEnable) ? kIirFifoEnabled : 0;
  if ((ier_ & kIerRls) && overrun_) return fifo_bits | kIirRls;
  if ((ier_ & kIerRda) && fifo_count_ > 0)
    return fifo_bits | (fifo_count_ >= trigger_level() ? kIirRda : kIirTimeout);
  if ((ier_ & kIerThre) && thre_pending_) return fifo_bits | kIirThre;
  if ((ier_ & kIerMsi) && (msr_deltas_ & kMsrDeltaMask)) return fifo_bits | kIirMsi;
  return fifo_bits | kIirNoInt;
}

size_t Uart16550::fifo_capacity() const {
  return (fcr_ & kFcrEnable) ? kFifoSize : 1;
}

size_t Uart16550::trigger_level() const {
  if (!(fcr_ & kFcrEnable)) return 1;
  static constexpr size_t kLevels[4] = {1, 4, 8, 14};
  return kLevels[(fcr_ & kFcrTriggerMask) >> 6];
}

void Uart16550::fifo_clear() {
  fifo_head_ = 0;
  fifo_count_ = 0;
}

bool Uart16550::fifo_push(uint8_t byte) {
  if (fifo_count_ >= fifo_capacity()) return false;
  fifo_[(fifo_head_ + fifo_count_) % kFifoSize] = byte;
  ++fifo_count_;
  return true;
}

bool Uart16550::irq_wanted() const {
  return !(iir() & kIirNoInt) && (mcr_ & kMcrOut2) && !(mcr_ & kMcrLoop);
}

void Uart16550::update_irq() {
  const bool level = irq_wanted();
  if (level == irq_level_) return;
  irq_level_ = level;
  if (irq_) irq_->set_level(level);
}

bool Uart16550::take_space_notice() {
  if (!input_refused_ || (mcr_ & kMcrLoop) || fifo_count_ >= fifo_capacity())
    return false;
  input_refused_ = false;
  return true;
}

size_t Uart16550::enqueue_input(std::span<const uint8_t> bytes) {
  std::lock_guard lock(mu_);
  size_t accepted = 0;
  if (!(mcr_ & kMcrLoop)) {
    while (accepted < bytes.size() && fifo_push(bytes[accepted])) ++accepted;
  }
  if (accepted < bytes.size()) input_refused_ = true;
  if (accepted > 0) update_irq();
  return accepted;
}

size_t Uart16550::input_space() const {
  std::lock_guard lock(mu_);
  if (mcr_ & kMcrLoop) return 0;
  return fifo_capacity() - fifo_count_;
}

Uart16550::State Uart16550::state() const {
  std::lock_guard lock(mu_);
  State s;
  s.dll = dll_;
  s.dlm = dlm_;
  s.ier = ier_;
  s.fcr = fcr_;
  s.lcr = lcr_;
  s.mcr = mcr_;
  s.scr = scr_;
  s.overrun = overrun_;
  s.msr_deltas = msr_deltas_;
  s.thre_pending = thre_pending_;
  s.rx_fifo.reserve(fifo_count_);
  for (size_t i = 0; i < fifo_count_; ++i)
    s.rx_fifo.push_back(fifo_[(fifo_head_ + i) % kFifoSize]);
  return s;
}

void Uart16550::set_state(const State& s) {
  const size_t capacity = (s.fcr & kFcrEnable) ? kFifoSize : 1;
  if (s.rx_fifo.size() > capacity)
    throw Error("uart16550: snapshot holds " + std::to_string(s.rx_fifo.size()) +
                " received bytes, more than the FIFO's " + std::to_string(capacity));
  bool notify = false;
  {
    std::lock_guard lock(mu_);
    dll_ = s.dll;
    dlm_ = s.dlm;
    ier_ = s.ier & kIerMask;
    fcr_ = (s.fcr & kFcrEnable) ? (s.fcr & kFcrStoredMask) : 0;
    lcr_ = s.lcr;
    mcr_ = s.mcr & kMcrMask;
    scr_ = s.scr;
    overrun_ = s.overrun;
    msr_deltas_ = s.msr_deltas & kMsrDeltaMask;
    thre_pending_ = s.thre_pending;
    fifo_clear();
    std::copy(s.rx_fifo.begin(), s.rx_fifo.end(), fifo_.begin());
    fifo_count_ = s.rx_fifo.size();
    last_rx_ = 0;
    irq_level_ = irq_wanted();
    if (irq_) irq_->set_level(irq_level_);
    notify = take_space_notice();
  }
  if (notify && on_input_space_) on_input_space_();
}

void Uart16550::reset() {
  bool notify = false;
  {
    std::lock_guard lock(mu_);
    const State s;
    dll_ = s.dll;
    dlm_ = s.dlm;
    ier_ = fcr_ = lcr_ = mcr_ = scr_ = 0;
    overrun_ = false;
    msr_deltas_ = 0;
    thre_pending_ = false;
    fifo_clear();
    last_rx_ = 0;
    update_irq();
    notify = take_space_notice();
  }
  if (notify && on_input_space_) on_input_space_();
}

}  // namespace rz::devices
