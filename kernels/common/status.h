// Status helpers. Debian's Abseil (20220623) ships absl::Status but not its macros, so the two
// we use live here. Errors gain context as they rise: "loading layer 12: <cause>".
#pragma once

#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace nsa {

// Returns `status` with "context: " put in front of its message; OK stays OK.
inline absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(context, ": ", status.message()));
}

}  // namespace nsa

#define NSA_STATUS_CONCAT_INNER_(a, b) a##b
#define NSA_STATUS_CONCAT_(a, b) NSA_STATUS_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                       \
  do {                                              \
    ::absl::Status nsa_status_ = (expr);            \
    if (!nsa_status_.ok()) return nsa_status_;      \
  } while (0)

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(NSA_STATUS_CONCAT_(nsa_statusor_, __LINE__), lhs, expr)

#define ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                           \
  if (!statusor.ok()) return statusor.status();     \
  lhs = std::move(statusor).value()
