// Guest console output, decoupled from the host's output fd: vCPU threads
// append bytes (a UART transmits one per VM exit) and the machine's event
// loop thread writes them out in large chunks. A slow terminal, pipe or
// file then costs one write(2) per batch instead of one per guest byte, and
// never stalls a vCPU unless the bounded buffer is full.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <span>
#include <vector>

#include "util/fd.h"

namespace rz::vmm {

class ConsoleOutput {
 public:
  explicit ConsoleOutput(int out_fd, size_t capacity = 1 << 20);

  // Called from vCPU threads. Blocks only while the buffer is full.
  void append(std::span<const uint8_t> bytes);
  // Readable when there is something to flush (for poll()).
  int event_fd() const { return event_.get(); }
  // Writes everything buffered to the output fd (event-loop thread).
  void flush();
  // Makes append() stop waiting for space (the machine is stopping).
  void close();

 private:
  int out_fd_;
  size_t capacity_;
  UniqueFd event_;
  std::mutex mu_;
  std::condition_variable space_;
  std::vector<uint8_t> buf_;
  bool closed_ = false;
};

}  // namespace rz::vmm
