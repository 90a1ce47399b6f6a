/* The freestanding basics. gcc may emit calls to memset/memcpy/memmove/
 * memcmp even with -ffreestanding, so they must exist. Written as plain
 * byte loops: the host emulates every instruction, and these only ever
 * touch a few hundred bytes. */
#include "guest.h"

void* memset(void* d, int c, size_t n) {
  unsigned char* p = d;
  while (n--) *p++ = (unsigned char)c;
  return d;
}

void* memcpy(void* d, const void* s, size_t n) {
  unsigned char* dp = d;
  const unsigned char* sp = s;
  while (n--) *dp++ = *sp++;
  return d;
}

void* memmove(void* d, const void* s, size_t n) {
  unsigned char* dp = d;
  const unsigned char* sp = s;
  if (dp < sp) {
    while (n--) *dp++ = *sp++;
  } else {
    while (n--) dp[n] = sp[n];
  }
  return d;
}

int memcmp(const void* a, const void* b, size_t n) {
  const unsigned char* ap = a;
  const unsigned char* bp = b;
  for (size_t i = 0; i < n; i++) {
    if (ap[i] != bp[i]) return ap[i] < bp[i] ? -1 : 1;
  }
  return 0;
}

int str_starts(const char* s, size_t n, const char* prefix) {
  size_t i = 0;
  for (; prefix[i]; i++) {
    if (i >= n || s[i] != prefix[i]) return 0;
  }
  return 1;
}

int parse_u64(const char* s, size_t n, uint64_t* out) {
  if (n == 0 || n > 19) return 0;  /* 19 digits always fit in 64 bits */
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return 0;
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  *out = v;
  return 1;
}
