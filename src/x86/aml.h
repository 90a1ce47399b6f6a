// A small builder of AML (ACPI Machine Language) byte sequences, enough to
// write a DSDT in code: names, integers, strings, Name/Scope/Device/Method,
// Package/Buffer and resource templates (ACPI 6.x, chapters 6.4 and 20).
//
// Every function returns the encoded bytes of one term; terms nest by being
// passed as arguments, so the C++ reads like the ASL it stands for:
//
//   scope("\\_SB", {device("COM1", {name("_HID", eisa_id("PNP0501")), ...})})
//
// Integers are 64-bit (the DSDT must have revision >= 2). Malformed input
// (bad name characters, too many elements, ...) throws rz::Error.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string_view>
#include <vector>

namespace rz::x86::aml {

using Bytes = std::vector<uint8_t>;
using TermList = std::vector<Bytes>;

// --- Encoding primitives -------------------------------------------------

// PkgLength encoding of `length`, a value that counts the encoding itself:
// 1 byte up to 63, 2 up to 4095, 3 up to 2^20-1, 4 up to 2^28-1.
Bytes pkg_length(uint32_t length);
// `body` preceded by the shortest PkgLength that covers it and itself.
Bytes with_pkg_length(const Bytes& body);

// A NameString: "_S5", "\\_SB.PCI0", "^^FOO", "\\" (the root). Segments are
// 1-4 characters [A-Z0-9_] (not starting with a digit), padded with '_'.
Bytes name_string(std::string_view path);

// An integer in its shortest form: ZeroOp, OneOp, OnesOp (all 64 bits set),
// else Byte/Word/DWord/QWord prefix.
Bytes integer(uint64_t value);
// A String (ASCII 0x01-0x7f), NUL-terminated.
Bytes string(std::string_view s);
// EisaId("PNP0501"): three upper-case letters and four hex digits compressed
// into 32 bits. Encoded as a DWordConst, as iasl does.
uint32_t eisa_id_value(std::string_view id);
Bytes eisa_id(std::string_view id);

// --- Terms -----------------------------------------------------------------

Bytes name(std::string_view name, const Bytes& object);                 // Name
Bytes scope(std::string_view path, const TermList& terms);              // Scope
Bytes device(std::string_view name, const TermList& terms);             // Device
Bytes method(std::string_view name, uint8_t arg_count, bool serialized,
             const TermList& terms);                                    // Method
Bytes return_(const Bytes& value);                                      // Return
Bytes package(const TermList& elements);        // Package, up to 255 elements
Bytes buffer(const Bytes& data);                // Buffer () {data}

// --- Resource templates (ACPI 6.4) -----------------------------------------

// Memory attribute of DWordMemory / QWordMemory.
enum class Cache : uint8_t { NonCacheable = 0, Cacheable = 1, WriteCombining = 2, Prefetchable = 3 };

// Collects resource descriptors; build() closes them with an EndTag
// (checksum 0) and wraps them in a Buffer, like ResourceTemplate () {...}.
// Address-space descriptors are ResourceProducer, MinFixed, MaxFixed,
// PosDecode, with granularity and translation 0 and length max - min + 1.
class ResourceTemplate {
 public:
  // IO (Decode16, min, max, alignment, length)
  ResourceTemplate& io(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length);
  // IRQNoFlags () {irqs}, ISA IRQs 0-15
  ResourceTemplate& irq_no_flags(std::initializer_list<uint8_t> irqs);
  // Memory32Fixed (ReadWrite or ReadOnly, base, length)
  ResourceTemplate& memory32_fixed(uint32_t base, uint32_t length, bool writable = true);
  // WordBusNumber (..., min, max, ...)
  ResourceTemplate& word_bus_number(uint16_t min, uint16_t max);
  // WordIO (..., EntireRange, 0, min, max, 0, length)
  ResourceTemplate& word_io(uint16_t min, uint16_t max);
  // DWordMemory / QWordMemory (..., cache, ReadWrite or ReadOnly, 0, min, max, 0, length)
  ResourceTemplate& dword_memory(uint32_t min, uint32_t max, Cache cache, bool writable = true);
  ResourceTemplate& qword_memory(uint64_t min, uint64_t max, Cache cache, bool writable = true);

  const Bytes& descriptors() const { return data_; }
  Bytes build() const;

 private:
  Bytes data_;
};

}  // namespace rz::x86::aml
