// Block back-ends for virtio-blk: how requests reach the image file.
//
// A back-end does positioned I/O on one open file descriptor (it does not own
// it) and reports each request's outcome through a completion callback:
//
//  - SyncBlockBackend runs each request with preadv/pwritev/fdatasync/
//    fallocate on the calling thread and calls the completion before
//    submit() returns.
//  - UringBlockBackend (engine=io_uring) queues requests on an io_uring and
//    completes them from reap(), which the owner calls when event_fd() is
//    readable (the device registers that eventfd with the EventLoop), or
//    from poll_ready() right after submitting, for requests the kernel
//    finished inline (page-cache hits).
//
// Buffers are the guest's own memory: a read or write request carries iovecs
// that point straight into guest RAM (no bounce copy). They must stay mapped
// until the request completes; drain() waits for everything in flight.
//
// Threading: one thread (the machine's event loop) drives a back-end.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace rz::virtio {

enum class BlockEngine : uint8_t { kSync, kIoUring };
const char* to_string(BlockEngine e);  // "sync", "io_uring"

struct BlockIo {
  enum class Op : uint8_t {
    kRead,         // preadv into `iov` at `offset`
    kWrite,        // pwritev from `iov` at `offset`
    kFlush,        // fdatasync
    kDiscard,      // deallocate [offset, offset+length); a no-op where unsupported
    kWriteZeroes,  // make [offset, offset+length) read as zeroes
  };
  Op op = Op::kRead;
  uint64_t offset = 0;  // bytes
  // Bytes for kDiscard / kWriteZeroes (read and write take theirs from iov).
  uint64_t length = 0;
  // kRead / kWrite: at most kMaxIov entries, copied by submit() if the
  // back-end needs them later; the memory they point to is not copied.
  std::span<const iovec> iov;
  // kWriteZeroes: the range may be deallocated (punched) rather than written.
  bool unmap = false;
};

// Result of a request: 0 on success (a read or write moved all its bytes),
// else a negative errno.
using BlockCompletion = std::function<void(uint64_t cookie, int result)>;

class BlockBackend {
 public:
  // Most iovecs one read or write may carry (the kernel's IOV_MAX).
  static constexpr size_t kMaxIov = 1024;
  // Largest kWriteZeroes range that may have to be written out as zeroes
  // (where the file system can neither zero nor punch a range).
  static constexpr uint64_t kMaxWriteZeroesBytes = 32u << 20;

  virtual ~BlockBackend() = default;

  virtual BlockEngine engine() const = 0;
  // Requests the back-end can hold at once; submit() needs in_flight() below it.
  virtual uint32_t max_in_flight() const = 0;
  virtual uint32_t in_flight() const = 0;

  // Starts `io`. Its completion is called exactly once, with `cookie`: from
  // inside submit() (sync engine, or an immediate failure) or from reap().
  // Precondition: in_flight() < max_in_flight() and the iov limits above.
  virtual void submit(const BlockIo& io, uint64_t cookie) = 0;
  // Hands queued submissions to the kernel (io_uring: one io_uring_enter
  // for a batch of submit() calls). No-op for the sync engine.
  virtual void flush_submissions() {}
  // An fd that is readable when reap() has completions to deliver, or -1.
  virtual int event_fd() const { return -1; }
  // Delivers the completions that have arrived, without blocking.
  virtual void reap() {}
  // Delivers completions that are already there (e.g. requests the kernel
  // finished inline while they were submitted) without any system call;
  // returns how many. event_fd() may still be readable for them.
  virtual uint32_t poll_ready() { return 0; }
  // Blocks until nothing is in flight; completions that arrive meanwhile are
  // delivered (the owner may ignore them).
  virtual void drain() {}
};

// Creates the back-end for `engine` on `fd` (not owned; it must outlive the
// back-end). `completion` is called as described above. Throws rz::Error
// naming the engine if it cannot be set up (e.g. io_uring not permitted);
// `what` (e.g. "disk /path/img") prefixes that message.
std::unique_ptr<BlockBackend> make_block_backend(BlockEngine engine, int fd,
                                                 BlockCompletion completion,
                                                 const std::string& what);

// --- Shared by the back-end implementations; not for other callers ----------
namespace blk_detail {

// How kDiscard / kWriteZeroes reach the file. fallocate(2) modes are tried
// in order; a mode the file system rejects with EOPNOTSUPP (or EINVAL) is
// remembered as unsupported and not tried again on this file.
struct FallocateSupport {
  bool punch_hole = true;  // FALLOC_FL_PUNCH_HOLE: deallocates, reads as zeroes
  bool zero_range = true;  // FALLOC_FL_ZERO_RANGE: zeroes, stays allocated
};

// One step of a kDiscard / kWriteZeroes request.
enum class ZeroStep : uint8_t {
  kDone,       // nothing (left) to do: complete with success
  kPunch,      // fallocate(PUNCH_HOLE | KEEP_SIZE)
  kZeroRange,  // fallocate(ZERO_RANGE | KEEP_SIZE)
  kWrite,      // write zeroes from zero_buffer()
};
// The first step for `io` (kDiscard or kWriteZeroes) given what is supported.
ZeroStep first_zero_step(const BlockIo& io, const FallocateSupport& s);
// The step to try after `failed` ended with errno `err`; marks a mode the file
// system does not support in `s`. nullopt: the error is final.
std::optional<ZeroStep> next_zero_step(const BlockIo& io, ZeroStep failed, int err,
                                       FallocateSupport& s);
int fallocate_mode(ZeroStep step);

// A back-end's buffer of zeroes for kWrite steps, allocated on first use.
class ZeroBuffer {
 public:
  static constexpr size_t kChunk = 1u << 20;
  // iovecs covering `length` bytes of zeroes, all pointing at one chunk
  // (length <= BlockBackend::kMaxWriteZeroesBytes).
  void iovecs(uint64_t length, std::vector<iovec>& out);

 private:
  std::unique_ptr<uint8_t[]> buf_;
};
// Drops the first `n` bytes from `iov` (after a short transfer).
void advance_iovecs(std::vector<iovec>& iov, size_t n);
uint64_t iov_bytes(std::span<const iovec> iov);

std::unique_ptr<BlockBackend> make_uring_backend(int fd, BlockCompletion completion,
                                                 const std::string& what);

}  // namespace blk_detail
}  // namespace rz::virtio
