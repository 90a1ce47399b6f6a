// Helpers shared by the static guest tools rz-io.c and rz-tcp.c (each is
// built from its one .c file; see bench/CMakeLists.txt). The including file
// defines usage(), which the parsers call on bad input.
#pragma once

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static void usage(void);

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

// Accepts plain numbers and K/M/G suffixes (powers of 1024).
static uint64_t parse_size(const char* s) {
  char* end = NULL;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno || end == s) usage();
  uint64_t mul = 1;
  if (*end == 'K' || *end == 'k') mul = 1ull << 10, end++;
  else if (*end == 'M' || *end == 'm') mul = 1ull << 20, end++;
  else if (*end == 'G' || *end == 'g') mul = 1ull << 30, end++;
  if (*end || v > UINT64_MAX / mul) usage();
  return (uint64_t)v * mul;
}

static double parse_secs(const char* s) {
  char* end = NULL;
  double v = strtod(s, &end);
  if (end == s || *end || !(v >= 0) || v > 1e6) usage();
  return v;
}
