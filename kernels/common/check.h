// NSA_CHECK: a broken invariant (a bug, not bad input) aborts with the condition and a message.
// Debian's Abseil (20220623) predates absl/log, so this stands in for CHECK.
#pragma once

#include <cstdio>
#include <cstdlib>

#define NSA_CHECK(cond, ...)                                                              \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);        \
      std::fprintf(stderr, __VA_ARGS__);                                                  \
      std::fputc('\n', stderr);                                                           \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)
