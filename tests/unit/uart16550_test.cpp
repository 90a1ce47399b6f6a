#include "devices/uart16550.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "util/error.h"

namespace rz::devices {
namespace {

// Registers.
constexpr uint8_t RBR = 0, THR = 0, DLL = 0, IER = 1, DLM = 1, IIR = 2, FCR = 2,
                  LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7;

class FakeIrq : public IrqLine {
 public:
  void set_level(bool high) override {
    std::lock_guard lock(mu);
    transitions.push_back(high);
  }
  std::vector<bool> take() {
    std::lock_guard lock(mu);
    std::vector<bool> t;
    t.swap(transitions);
    return t;
  }
  std::mutex mu;
  std::vector<bool> transitions;
};

class UartTest : public ::testing::Test {
 protected:
  UartTest()
      : irq(std::make_shared<FakeIrq>()),
        uart(irq,
             [this](std::span<const uint8_t> b) { out.insert(out.end(), b.begin(), b.end()); },
             [this] { ++space_calls; }) {}

  uint8_t in(uint8_t reg) {
    uint8_t v = 0;
    uart.read(reg, std::span<uint8_t>(&v, 1));
    return v;
  }
  void outb(uint8_t reg, uint8_t v) { uart.write(reg, std::span<const uint8_t>(&v, 1)); }
  size_t feed(std::vector<uint8_t> bytes) { return uart.enqueue_input(bytes); }

  std::shared_ptr<FakeIrq> irq;
  std::vector<uint8_t> out;
  int space_calls = 0;
  Uart16550 uart;
};

TEST_F(UartTest, PowerOnValues) {
  EXPECT_EQ(in(IER), 0x00);
  EXPECT_EQ(in(IIR), 0x01);
  EXPECT_EQ(in(LCR), 0x00);
  EXPECT_EQ(in(MCR), 0x00);
  EXPECT_EQ(in(LSR), 0x60);  // THRE | TEMT
  EXPECT_EQ(in(MSR), 0xb0);  // DCD | DSR | CTS: the far end is there
  EXPECT_TRUE(irq->take().empty());
}

TEST_F(UartTest, ScratchRegister) {
  outb(SCR, 0x5a);
  EXPECT_EQ(in(SCR), 0x5a);
  outb(SCR, 0xa5);
  EXPECT_EQ(in(SCR), 0xa5);
}

TEST_F(UartTest, DivisorLatchHidesRbrAndIer) {
  outb(IER, 0x05);
  outb(LCR, 0x83);  // DLAB, 8N1
  outb(DLL, 0x01);
  outb(DLM, 0x02);
  EXPECT_EQ(in(DLL), 0x01);
  EXPECT_EQ(in(DLM), 0x02);
  EXPECT_TRUE(out.empty()) << "a DLL write must not transmit";
  outb(LCR, 0x03);
  EXPECT_EQ(in(IER), 0x05);
  EXPECT_EQ(in(LCR), 0x03);
  outb(LCR, 0x83);
  EXPECT_EQ(in(DLL), 0x01);
  EXPECT_EQ(in(DLM), 0x02);
}

TEST_F(UartTest, WideAccessIsBytewise) {
  outb(LCR, 0x80);
  const uint8_t div[2] = {0x34, 0x12};
  uart.write(DLL, div);
  EXPECT_EQ(in(DLL), 0x34);
  EXPECT_EQ(in(DLM), 0x12);
  uint8_t back[2] = {};
  uart.read(DLL, back);
  EXPECT_EQ(back[0], 0x34);
  EXPECT_EQ(back[1], 0x12);
}

TEST_F(UartTest, IerKeepsOnlyFourBits) {
  // Linux's autoconfig: IER must read back 0 and 0x0f; bit 6 (XScale UUE)
  // must not stick.
  outb(IER, 0x00);
  EXPECT_EQ(in(IER) & 0x0f, 0x00);
  outb(IER, 0x0f);
  EXPECT_EQ(in(IER) & 0x0f, 0x0f);
  outb(IER, 0xff);
  EXPECT_EQ(in(IER), 0x0f);
}

TEST_F(UartTest, FifoShowsInIirTopBits) {
  EXPECT_EQ(in(IIR) & 0xc0, 0x00);
  outb(FCR, 0x01);
  EXPECT_EQ(in(IIR) >> 6, 3);  // 16550A
  // A 16750 would show bit 5 once FCR bit 5 is set: we are not one.
  outb(FCR, 0x21);
  EXPECT_EQ(in(IIR) >> 5, 6);
  outb(LCR, 0xbf);
  outb(FCR, 0x21);
  EXPECT_EQ(in(IIR) >> 5, 6);
  outb(LCR, 0x00);
  outb(FCR, 0x00);
  EXPECT_EQ(in(IIR), 0x01);
}

TEST_F(UartTest, LoopbackReflectsMcrInMsr) {
  // Linux's loopback check: MCR = LOOP | OUT2 | RTS -> MSR status DCD | CTS.
  outb(MCR, 0x1a);
  EXPECT_EQ(in(MSR) & 0xf0, 0x90);
  outb(MCR, 0x1f);
  EXPECT_EQ(in(MSR) & 0xf0, 0xf0);
  outb(MCR, 0x10);
  // RI fell (trailing edge), CTS, DSR and DCD changed.
  EXPECT_EQ(in(MSR), 0x0f);
  EXPECT_EQ(in(MSR), 0x00) << "reading MSR clears the delta bits";
  outb(MCR, 0x00);
  EXPECT_EQ(in(MSR), 0xb0 | 0x0b);
}

TEST_F(UartTest, LinuxAutoconfigSequence) {
  // The checks of Linux's 8250 autoconfig(), in order, for a 16550A.
  outb(IER, 0);
  EXPECT_EQ(in(IER) & 0x0f, 0);
  outb(IER, 0x0f);
  EXPECT_EQ(in(IER) & 0x0f, 0x0f);
  outb(IER, 0);
  outb(MCR, 0x1a);  // loopback test
  EXPECT_EQ(in(MSR) & 0xf0, 0x90);
  outb(MCR, 0);
  outb(LCR, 0xbf);  // EFR probe: offset 2 must not read 0 (no EFR)
  EXPECT_NE(in(2), 0);
  outb(LCR, 0);
  outb(FCR, 0x01);
  EXPECT_EQ(in(IIR) >> 6, 3) << "FIFO present: 16550A";
  outb(LCR, 0xbf);
  EXPECT_NE(in(2), 0);
  outb(LCR, 0xe0);  // National SuperIO probe: EXCR1 must not track MCR.LOOP
  const uint8_t excr1 = in(2);
  outb(LCR, 0);
  outb(MCR, 0x10);
  outb(LCR, 0xe0);
  EXPECT_EQ((in(2) ^ excr1) & 0x10, 0);
  outb(LCR, 0);
  outb(MCR, 0);
  outb(IER, 0x40);  // XScale UUE bit must not stick
  EXPECT_EQ(in(IER) & 0x40, 0);
  outb(IER, 0);
  // serial8250_do_startup: clear FIFOs, LSR sanity, THRE re-assert test.
  outb(FCR, 0x07);
  EXPECT_NE(in(LSR), 0xff);
  outb(IER, 0x02);
  const uint8_t iir1 = in(IIR);
  outb(IER, 0);
  outb(IER, 0x02);
  const uint8_t iir2 = in(IIR);
  outb(IER, 0);
  EXPECT_EQ(iir1 & 0x01, 0);
  EXPECT_EQ(iir2 & 0x01, 0) << "Linux would flag UART_BUG_THRE";
  in(MSR);  // drop the deltas left by the loopback tests
  outb(LCR, 0x03);
  outb(MCR, 0x0b);  // DTR | RTS | OUT2
  outb(IER, 0x02);
  EXPECT_EQ(in(LSR) & 0x40, 0x40);
  EXPECT_EQ(in(IIR) & 0x01, 0) << "Linux would flag UART_BUG_TXEN";
  outb(IER, 0);
}

TEST_F(UartTest, TransmitGoesToSink) {
  for (uint8_t c : {'h', 'i', '\n'}) outb(THR, c);
  EXPECT_EQ(out, (std::vector<uint8_t>{'h', 'i', '\n'}));
  EXPECT_EQ(in(LSR) & 0x60, 0x60);
}

TEST_F(UartTest, ThreInterruptOnEnableAndAcknowledgeByIir) {
  // Linux's "does THRE re-assert" test during startup.
  outb(IER, 0x02);
  EXPECT_EQ(in(IIR), 0x02);
  EXPECT_EQ(in(IIR), 0x01) << "reading IIR acknowledges THRE";
  outb(IER, 0x02);  // already enabled: nothing new
  EXPECT_EQ(in(IIR), 0x01);
  outb(IER, 0x00);
  outb(IER, 0x02);
  EXPECT_EQ(in(IIR), 0x02) << "re-enabling ETBEI re-raises THRE";
}

TEST_F(UartTest, ThreInterruptAfterEachTransmit) {
  outb(FCR, 0x01);
  outb(IER, 0x02);
  EXPECT_EQ(in(IIR), 0xc2);
  EXPECT_EQ(in(IIR), 0xc1);
  outb(THR, 'x');
  EXPECT_EQ(in(IIR), 0xc2);
  EXPECT_EQ(in(IIR), 0xc1);
}

TEST_F(UartTest, ThreMaskedWhileDisabled) {
  outb(THR, 'x');  // arms THRE, but ETBEI is off
  EXPECT_EQ(in(IIR), 0x01);
}

TEST_F(UartTest, ReceiveInterruptClearedByReadingRbr) {
  outb(IER, 0x01);
  EXPECT_EQ(feed({'a'}), 1u);
  EXPECT_EQ(in(LSR) & 0x01, 0x01);
  EXPECT_EQ(in(IIR), 0x04);
  EXPECT_EQ(in(IIR), 0x04) << "reading IIR does not acknowledge RX data";
  EXPECT_EQ(in(RBR), 'a');
  EXPECT_EQ(in(IIR), 0x01);
  EXPECT_EQ(in(LSR) & 0x01, 0x00);
  EXPECT_EQ(in(RBR), 'a') << "an empty RBR reads its last byte";
}

TEST_F(UartTest, ReceiveTriggerLevel) {
  outb(FCR, 0x81);  // FIFO on, trigger 8 (what Linux uses)
  outb(IER, 0x01);
  EXPECT_EQ(feed({1, 2, 3}), 3u);
  EXPECT_EQ(in(IIR), 0xcc) << "below the trigger: character timeout";
  EXPECT_EQ(feed({4, 5, 6, 7, 8}), 5u);
  EXPECT_EQ(in(IIR), 0xc4) << "at the trigger: data available";
  for (int i = 1; i <= 8; ++i) EXPECT_EQ(in(RBR), i);
  EXPECT_EQ(in(IIR), 0xc1);

  outb(FCR, 0xc1);  // trigger 14
  feed(std::vector<uint8_t>(13, 'x'));
  EXPECT_EQ(in(IIR), 0xcc);
  feed({'y'});
  EXPECT_EQ(in(IIR), 0xc4);
  outb(FCR, 0xc3);  // clear the receive FIFO
  EXPECT_EQ(in(IIR), 0xc1);
  EXPECT_EQ(in(LSR) & 0x01, 0);
}

TEST_F(UartTest, InterruptPriorities) {
  outb(FCR, 0x01);
  outb(MCR, 0x10);  // loopback, to make an overrun
  outb(IER, 0x0f);
  // Modem status delta from entering loopback, THRE from enabling ETBEI.
  EXPECT_EQ(in(IIR), 0xc2);  // THRE beats modem status, and is acknowledged
  EXPECT_EQ(in(IIR), 0xc0);  // modem status
  in(MSR);
  EXPECT_EQ(in(IIR), 0xc1);
  for (int i = 0; i < 17; ++i) outb(THR, static_cast<uint8_t>(i));  // one too many
  EXPECT_EQ(in(IIR), 0xc6) << "line status (overrun) first";
  EXPECT_EQ(in(LSR), 0x63);  // DR | OE | THRE | TEMT
  EXPECT_EQ(in(LSR), 0x61) << "OE clears when LSR is read";
  EXPECT_EQ(in(IIR), 0xc4) << "then received data";
  for (int i = 0; i < 16; ++i) EXPECT_EQ(in(RBR), i);
  EXPECT_EQ(in(IIR), 0xc2) << "then THRE (re-armed by the transmits)";
  EXPECT_EQ(in(IIR), 0xc1);
  EXPECT_TRUE(out.empty()) << "loopback keeps bytes off the wire";
}

TEST_F(UartTest, LoopbackRoutesTxToRxAndRefusesInput) {
  outb(MCR, 0x10);
  outb(THR, 'q');
  EXPECT_EQ(in(LSR) & 0x01, 0x01);
  EXPECT_EQ(in(RBR), 'q');
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(uart.input_space(), 0u);
  EXPECT_EQ(feed({'z'}), 0u);
  EXPECT_EQ(space_calls, 0);
  outb(MCR, 0x00);
  EXPECT_EQ(space_calls, 1) << "leaving loopback makes room for input";
  EXPECT_EQ(feed({'z'}), 1u);
}

TEST_F(UartTest, IrqLineFollowsPendingAndOut2) {
  outb(IER, 0x02);  // THRE pending, but OUT2 is off: the line stays low
  EXPECT_TRUE(irq->take().empty());
  outb(MCR, 0x0b);  // DTR | RTS | OUT2
  EXPECT_EQ(irq->take(), std::vector<bool>{true});
  in(IIR);  // acknowledge THRE
  EXPECT_EQ(irq->take(), std::vector<bool>{false});
  outb(THR, 'a');
  EXPECT_EQ(irq->take(), std::vector<bool>{true});
  outb(THR, 'b');  // still pending: no redundant set_level
  EXPECT_TRUE(irq->take().empty());
  outb(IER, 0x00);
  EXPECT_EQ(irq->take(), std::vector<bool>{false});

  outb(IER, 0x01);
  feed({'x'});
  EXPECT_EQ(irq->take(), std::vector<bool>{true});
  outb(MCR, 0x03);  // OUT2 off gates the line
  EXPECT_EQ(irq->take(), std::vector<bool>{false});
  outb(MCR, 0x0b);
  EXPECT_EQ(irq->take(), std::vector<bool>{true});
  outb(MCR, 0x1b);  // loopback forces OUT2 inactive
  EXPECT_EQ(irq->take(), std::vector<bool>{false});
  outb(MCR, 0x0b);
  EXPECT_EQ(irq->take(), std::vector<bool>{true});
  in(RBR);
  EXPECT_EQ(irq->take(), std::vector<bool>{false});
}

TEST_F(UartTest, InputBackpressure) {
  // Without FIFOs the receiver holds one byte.
  EXPECT_EQ(uart.input_space(), 1u);
  EXPECT_EQ(feed({'a', 'b'}), 1u);
  EXPECT_EQ(uart.input_space(), 0u);
  EXPECT_EQ(feed({'b'}), 0u);
  EXPECT_EQ(space_calls, 0);
  EXPECT_EQ(in(RBR), 'a');
  EXPECT_EQ(space_calls, 1);
  EXPECT_EQ(in(RBR), 'a');
  EXPECT_EQ(space_calls, 1) << "notified once per refusal";

  outb(FCR, 0x01);
  EXPECT_EQ(uart.input_space(), Uart16550::kFifoSize);
  std::vector<uint8_t> big(40);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i);
  const size_t took = uart.enqueue_input(big);
  EXPECT_EQ(took, Uart16550::kFifoSize);
  EXPECT_EQ(uart.input_space(), 0u);
  EXPECT_EQ(in(RBR), 0);
  EXPECT_EQ(space_calls, 2);
  EXPECT_EQ(uart.input_space(), 1u);
  EXPECT_EQ(uart.enqueue_input(std::span(big).subspan(took)), 1u);
  for (size_t i = 1; i <= Uart16550::kFifoSize; ++i) EXPECT_EQ(in(RBR), i);
  EXPECT_EQ(in(LSR) & 0x01, 0) << "nothing dropped, nothing duplicated";
}

TEST_F(UartTest, StateRoundTrip) {
  outb(LCR, 0x80);
  outb(DLL, 0x01);
  outb(DLM, 0x00);
  outb(LCR, 0x03);
  outb(FCR, 0x81);
  outb(MCR, 0x0b);
  outb(SCR, 0x77);
  feed({'r', 's'});
  outb(IER, 0x01);
  irq->take();

  const Uart16550::State s = uart.state();
  EXPECT_EQ(s.dll, 0x01);
  EXPECT_EQ(s.lcr, 0x03);
  EXPECT_EQ(s.fcr, 0x81);
  EXPECT_EQ(s.rx_fifo, (std::vector<uint8_t>{'r', 's'}));

  auto irq2 = std::make_shared<FakeIrq>();
  Uart16550 copy(irq2, nullptr);
  copy.set_state(s);
  EXPECT_EQ(irq2->take(), std::vector<bool>{true}) << "restore drives the line";
  uint8_t v = 0;
  copy.read(IIR, std::span<uint8_t>(&v, 1));
  EXPECT_EQ(v, 0xcc);
  copy.read(RBR, std::span<uint8_t>(&v, 1));
  EXPECT_EQ(v, 'r');
  copy.read(SCR, std::span<uint8_t>(&v, 1));
  EXPECT_EQ(v, 0x77);

  Uart16550::State bad;
  bad.rx_fifo.assign(2, 0);  // FIFOs off: only one byte fits
  EXPECT_THROW(copy.set_state(bad), Error);
  bad.fcr = 0x01;
  bad.rx_fifo.assign(Uart16550::kFifoSize + 1, 0);
  EXPECT_THROW(copy.set_state(bad), Error);
}

TEST_F(UartTest, ResetReturnsToPowerOn) {
  outb(MCR, 0x08);
  outb(IER, 0x02);
  EXPECT_EQ(irq->take(), std::vector<bool>{true});
  outb(SCR, 1);
  uart.reset();
  EXPECT_EQ(irq->take(), std::vector<bool>{false});
  EXPECT_EQ(in(IER), 0);
  EXPECT_EQ(in(MCR), 0);
  EXPECT_EQ(in(IIR), 0x01);
}

TEST_F(UartTest, UnknownOffsetsAreHarmless) {
  uint8_t v[4] = {};
  uart.read(6, v);  // MSR, SCR, then past the end
  EXPECT_EQ(v[2], 0xff);
  EXPECT_EQ(v[3], 0xff);
  const uint8_t w[4] = {1, 2, 3, 4};
  uart.write(6, w);
  EXPECT_EQ(in(SCR), 2);
}

TEST(Uart16550Threads, ConcurrentTransmitAndReceive) {
  auto irq = std::make_shared<FakeIrq>();
  std::atomic<size_t> sent{0};
  Uart16550 uart(irq, [&](std::span<const uint8_t> b) { sent += b.size(); });
  const uint8_t fcr = 0x01, ier = 0x03, mcr = 0x08;
  uart.write(FCR, std::span(&fcr, 1));
  uart.write(IER, std::span(&ier, 1));
  uart.write(MCR, std::span(&mcr, 1));

  constexpr size_t kBytes = 20000;
  std::atomic<size_t> received{0};
  std::thread tx1([&] {
    for (size_t i = 0; i < kBytes; ++i) {
      const uint8_t c = 'a';
      uart.write(THR, std::span(&c, 1));
    }
  });
  std::thread tx2([&] {
    for (size_t i = 0; i < kBytes; ++i) {
      const uint8_t c = 'b';
      uart.write(THR, std::span(&c, 1));
    }
  });
  std::thread producer([&] {
    size_t left = kBytes;
    const std::vector<uint8_t> chunk(7, 'z');
    while (left > 0) {
      left -= uart.enqueue_input(std::span(chunk).first(std::min(left, chunk.size())));
      std::this_thread::yield();
    }
  });
  std::thread consumer([&] {
    while (received < kBytes) {
      uint8_t lsr = 0;
      uart.read(LSR, std::span(&lsr, 1));
      if (lsr & 0x01) {
        uint8_t c = 0;
        uart.read(RBR, std::span(&c, 1));
        EXPECT_EQ(c, 'z');
        ++received;
      } else {
        std::this_thread::yield();
      }
    }
  });
  tx1.join();
  tx2.join();
  producer.join();
  consumer.join();
  EXPECT_EQ(sent, 2 * kBytes);
  EXPECT_EQ(received, kBytes);
  // Transitions alternate, starting with a rise.
  const std::vector<bool> t = irq->take();
  for (size_t i = 0; i < t.size(); ++i) EXPECT_EQ(t[i], i % 2 == 0);
}

}  // namespace
}  // namespace rz::devices
