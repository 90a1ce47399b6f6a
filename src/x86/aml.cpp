#include "x86/aml.h"

#include <string>

#include "util/error.h"

namespace rz::x86::aml {
namespace {

// Opcodes and prefixes (ACPI 6.x, 20.3).
constexpr uint8_t kZeroOp = 0x00, kOneOp = 0x01, kOnesOp = 0xff;
constexpr uint8_t kBytePrefix = 0x0a, kWordPrefix = 0x0b, kDWordPrefix = 0x0c,
                  kStringPrefix = 0x0d, kQWordPrefix = 0x0e;
constexpr uint8_t kNameOp = 0x08, kScopeOp = 0x10, kBufferOp = 0x11, kPackageOp = 0x12,
                  kMethodOp = 0x14, kReturnOp = 0xa4, kExtOpPrefix = 0x5b, kDeviceOp = 0x82;
constexpr uint8_t kRootChar = '\\', kParentPrefix = '^', kDualNamePrefix = 0x2e,
                  kMultiNamePrefix = 0x2f, kNullName = 0x00;

[[noreturn]] void fail(const std::string& what) { throw rz::Error("AML: " + what); }

void append(Bytes& out, const Bytes& more) { out.insert(out.end(), more.begin(), more.end()); }

// Little-endian value of `size` bytes.
void put(Bytes& out, uint64_t value, int size) {
  for (int i = 0; i < size; ++i) out.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

// `op`, then `head` and `tail` under one PkgLength.
Bytes op_with_pkg(std::initializer_list<uint8_t> op, const Bytes& head, const TermList& tail = {}) {
  Bytes body;
  size_t size = head.size();
  for (const Bytes& t : tail) size += t.size();
  body.reserve(size);
  append(body, head);
  for (const Bytes& t : tail) append(body, t);
  Bytes out(op);
  append(out, with_pkg_length(body));
  return out;
}

}  // namespace

Bytes pkg_length(uint32_t length) {
  // The lead byte holds the count of following bytes in bits 7-6. A one-byte
  // encoding keeps the value in bits 5-0; longer ones keep its low nibble in
  // bits 3-0 of the lead byte and the rest, 8 bits at a time, after it.
  if (length <= 0x3f) return {static_cast<uint8_t>(length)};
  int extra = length <= 0xfff ? 1 : length <= 0xfffff ? 2 : length <= 0xfffffff ? 3 : 0;
  if (extra == 0) fail("PkgLength " + std::to_string(length) + " exceeds 2^28-1");
  Bytes out{static_cast<uint8_t>((extra << 6) | (length & 0xf))};
  put(out, length >> 4, extra);
  return out;
}

Bytes with_pkg_length(const Bytes& body) {
  // The length counts its own encoding, so pick the smallest size that fits.
  static constexpr uint32_t kMax[] = {0x3f, 0xfff, 0xfffff, 0xfffffff};
  for (uint32_t n = 1; n <= 4; ++n) {
    if (body.size() + n <= kMax[n - 1]) {
      Bytes out;
      out.reserve(body.size() + n);
      append(out, pkg_length(static_cast<uint32_t>(body.size() + n)));
      append(out, body);
      return out;
    }
  }
  fail("package of " + std::to_string(body.size()) + " bytes is too large");
}

Bytes name_string(std::string_view path) {
  Bytes out;
  size_t i = 0;
  if (!path.empty() && path[0] == kRootChar) {
    out.push_back(kRootChar);
    i = 1;
  } else {
    while (i < path.size() && path[i] == kParentPrefix) out.push_back(path[i++]);
  }
  std::string_view rest = path.substr(i);
  if (rest.empty()) {
    out.push_back(kNullName);
    return out;
  }
  Bytes segs;
  size_t count = 0;
  while (true) {
    size_t dot = rest.find('.');
    std::string_view seg = rest.substr(0, dot);
    if (seg.empty() || seg.size() > 4) fail("bad name segment in \"" + std::string(path) + "\"");
    for (size_t k = 0; k < seg.size(); ++k) {
      char c = seg[k];
      bool ok = (c >= 'A' && c <= 'Z') || c == '_' || (k > 0 && c >= '0' && c <= '9');
      if (!ok) fail("bad character in name \"" + std::string(path) + "\"");
    }
    for (size_t k = 0; k < 4; ++k) segs.push_back(k < seg.size() ? seg[k] : '_');
    ++count;
    if (dot == std::string_view::npos) break;
    rest = rest.substr(dot + 1);
  }
  if (count > 255) fail("name path too long");
  if (count == 2) out.push_back(kDualNamePrefix);
  if (count > 2) out.insert(out.end(), {kMultiNamePrefix, static_cast<uint8_t>(count)});
  append(out, segs);
  return out;
}

Bytes integer(uint64_t value) {
  if (value == 0) return {kZeroOp};
  if (value == 1) return {kOneOp};
  if (value == ~uint64_t{0}) return {kOnesOp};
  Bytes out;
  out.reserve(9);
  if (value <= 0xff) {
    out.push_back(kBytePrefix), put(out, value, 1);
  } else if (value <= 0xffff) {
    out.push_back(kWordPrefix), put(out, value, 2);
  } else if (value <= 0xffffffff) {
    out.push_back(kDWordPrefix), put(out, value, 4);
  } else {
    out.push_back(kQWordPrefix), put(out, value, 8);
  }
  return out;
}

Bytes string(std::string_view s) {
  Bytes out{kStringPrefix};
  for (unsigned char c : s) {
    if (c == 0 || c > 0x7f) fail("string holds a non-ASCII or NUL character");
    out.push_back(c);
  }
  out.push_back(0);
  return out;
}

uint32_t eisa_id_value(std::string_view id) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  bool ok = id.size() == 7;
  for (size_t i = 0; ok && i < 7; ++i) ok = i < 3 ? (id[i] >= 'A' && id[i] <= 'Z') : hex(id[i]) >= 0;
  if (!ok) fail("bad EISA ID \"" + std::string(id) + "\"");
  // Three 5-bit letters ('A' = 1) then four hex digits, stored big-endian in
  // the four bytes of a little-endian DWORD.
  uint32_t vendor = (id[0] - '@') << 10 | (id[1] - '@') << 5 | (id[2] - '@');
  uint32_t product = hex(id[3]) << 12 | hex(id[4]) << 8 | hex(id[5]) << 4 | hex(id[6]);
  return (vendor >> 8) | (vendor & 0xff) << 8 | (product >> 8) << 16 | (product & 0xff) << 24;
}

Bytes eisa_id(std::string_view id) {
  Bytes out{kDWordPrefix};
  put(out, eisa_id_value(id), 4);
  return out;
}

Bytes name(std::string_view n, const Bytes& object) {
  Bytes out{kNameOp};
  append(out, name_string(n));
  append(out, object);
  return out;
}

Bytes scope(std::string_view path, const TermList& terms) {
  return op_with_pkg({kScopeOp}, name_string(path), terms);
}

Bytes device(std::string_view n, const TermList& terms) {
  return op_with_pkg({kExtOpPrefix, kDeviceOp}, name_string(n), terms);
}

Bytes method(std::string_view n, uint8_t arg_count, bool serialized, const TermList& terms) {
  if (arg_count > 7) fail("a method takes at most 7 arguments");
  Bytes head = name_string(n);
  head.push_back(static_cast<uint8_t>(arg_count | (serialized ? 1 << 3 : 0)));  // SyncLevel 0
  return op_with_pkg({kMethodOp}, head, terms);
}

Bytes return_(const Bytes& value) {
  Bytes out{kReturnOp};
  append(out, value);
  return out;
}

Bytes package(const TermList& elements) {
  if (elements.size() > 255) fail("a Package holds at most 255 elements");
  return op_with_pkg({kPackageOp}, {static_cast<uint8_t>(elements.size())}, elements);
}

Bytes buffer(const Bytes& data) {
  return op_with_pkg({kBufferOp}, integer(data.size()), {data});
}

// --- Resource descriptors (ACPI 6.4.2 small, 6.4.3 large) ------------------

namespace {

constexpr uint8_t kSmallIo = 0x47;           // type 0x08, 7 bytes
constexpr uint8_t kSmallIrqNoFlags = 0x22;   // type 0x04, 2 bytes
constexpr uint8_t kSmallEndTag = 0x79;       // type 0x0f, 1 byte
constexpr uint8_t kLargeMemory32Fixed = 0x86, kLargeDWordAddress = 0x87,
                  kLargeWordAddress = 0x88, kLargeQWordAddress = 0x8a;
constexpr uint8_t kSpaceMemory = 0, kSpaceIo = 1, kSpaceBus = 2;
// General flags: ResourceProducer (bit 0 clear), PosDecode (bit 1 clear),
// MinFixed (bit 2), MaxFixed (bit 3).
constexpr uint8_t kProducerFixed = 0x0c;
constexpr uint8_t kIoEntireRange = 0x03;

// A large address-space descriptor whose five fields (granularity, min,
// max, translation, length) are `size` bytes each.
void address_space(Bytes& out, uint8_t tag, int size, uint8_t space, uint8_t type_flags,
                   uint64_t min, uint64_t max) {
  if (min > max) fail("address range with min > max");
  uint64_t length = max - min + 1;
  if (length == 0 || (size < 8 && length >> (8 * size) != 0)) fail("address range too large");
  out.push_back(tag);
  put(out, 3 + 5 * size, 2);
  out.insert(out.end(), {space, kProducerFixed, type_flags});
  for (uint64_t v : {uint64_t{0}, min, max, uint64_t{0}, length}) put(out, v, size);
}

uint8_t memory_flags(Cache cache, bool writable) {
  return static_cast<uint8_t>((writable ? 1 : 0) | static_cast<uint8_t>(cache) << 1);
}

}  // namespace

ResourceTemplate& ResourceTemplate::io(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length) {
  data_.insert(data_.end(), {kSmallIo, 0x01});  // Decode16
  put(data_, min, 2);
  put(data_, max, 2);
  data_.insert(data_.end(), {alignment, length});
  return *this;
}

ResourceTemplate& ResourceTemplate::irq_no_flags(std::initializer_list<uint8_t> irqs) {
  uint16_t mask = 0;
  for (uint8_t irq : irqs) {
    if (irq > 15) fail("IRQNoFlags takes ISA IRQs 0-15");
    mask |= 1u << irq;
  }
  data_.push_back(kSmallIrqNoFlags);
  put(data_, mask, 2);
  return *this;
}

ResourceTemplate& ResourceTemplate::memory32_fixed(uint32_t base, uint32_t length, bool writable) {
  data_.insert(data_.end(), {kLargeMemory32Fixed, 9, 0, static_cast<uint8_t>(writable ? 1 : 0)});
  put(data_, base, 4);
  put(data_, length, 4);
  return *this;
}

ResourceTemplate& ResourceTemplate::word_bus_number(uint16_t min, uint16_t max) {
  address_space(data_, kLargeWordAddress, 2, kSpaceBus, 0, min, max);
  return *this;
}

ResourceTemplate& ResourceTemplate::word_io(uint16_t min, uint16_t max) {
  address_space(data_, kLargeWordAddress, 2, kSpaceIo, kIoEntireRange, min, max);
  return *this;
}

ResourceTemplate& ResourceTemplate::dword_memory(uint32_t min, uint32_t max, Cache cache, bool writable) {
  address_space(data_, kLargeDWordAddress, 4, kSpaceMemory, memory_flags(cache, writable), min, max);
  return *this;
}

ResourceTemplate& ResourceTemplate::qword_memory(uint64_t min, uint64_t max, Cache cache, bool writable) {
  address_space(data_, kLargeQWordAddress, 8, kSpaceMemory, memory_flags(cache, writable), min, max);
  return *this;
}

Bytes ResourceTemplate::build() const {
  Bytes all = data_;
  all.insert(all.end(), {kSmallEndTag, 0});  // checksum 0: "treat as valid"
  return buffer(all);
}

}  // namespace rz::x86::aml
