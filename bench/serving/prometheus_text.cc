#include "bench/serving/prometheus_text.h"

#include <httplib.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace nsa::bench {

absl::StatusOr<MetricSums> ParsePrometheusText(const std::string& text) {
  MetricSums sums;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    size_t name_end = 0;
    while (name_end < line.size() && line[name_end] != '{' && !absl::ascii_isspace(line[name_end])) ++name_end;
    const absl::string_view name = line.substr(0, name_end);
    size_t rest = name_end;
    if (rest < line.size() && line[rest] == '{') {  // labels: skip to the '}' outside quotes
      bool quoted = false;
      for (++rest; rest < line.size(); ++rest) {
        if (quoted && line[rest] == '\\') {
          ++rest;
        } else if (line[rest] == '"') {
          quoted = !quoted;
        } else if (!quoted && line[rest] == '}') {
          break;
        }
      }
      if (rest >= line.size()) return absl::InvalidArgumentError(absl::StrCat("metrics line ", line_no, ": unclosed labels"));
      ++rest;
    }
    const std::vector<absl::string_view> fields =
        absl::StrSplit(line.substr(rest), absl::ByAnyChar(" \t"), absl::SkipEmpty());
    double value = 0;
    if (name.empty() || fields.empty() || !absl::SimpleAtod(fields[0], &value)) {
      return absl::InvalidArgumentError(absl::StrCat("metrics line ", line_no, ": cannot read '", line, "'"));
    }
    sums[std::string(name)] += value;
  }
  return sums;
}

absl::StatusOr<MetricSums> ScrapeMetrics(const std::string& url) {
  std::string base = url, path = "/metrics";
  const size_t scheme = base.find("://");
  const size_t slash = base.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  if (slash != std::string::npos) {
    path = base.substr(slash);
    base = base.substr(0, slash);
  }
  if (scheme == std::string::npos) base = "http://" + base;
  httplib::Client client(base);
  client.set_connection_timeout(5);
  client.set_read_timeout(10);
  if (!client.is_valid()) return absl::InvalidArgumentError(absl::StrCat("--metrics-url: cannot use '", url, "'"));
  httplib::Result res = client.Get(path);
  if (!res) return absl::UnavailableError(absl::StrCat("cannot scrape ", url, ": ", httplib::to_string(res.error())));
  if (res->status != 200) return absl::UnavailableError(absl::StrCat("scraping ", url, ": HTTP ", res->status));
  absl::StatusOr<MetricSums> sums = ParsePrometheusText(res->body);
  if (!sums.ok()) return absl::InvalidArgumentError(absl::StrCat("scraping ", url, ": ", sums.status().message()));
  return sums;
}

}  // namespace nsa::bench
