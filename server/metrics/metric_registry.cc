#include "server/metrics/metric_registry.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <variant>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace kvfold::metrics {

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {
  CHECK(std::is_sorted(bounds_.begin(), bounds_.end())) << "histogram buckets must be sorted";
}

void Histogram::Observe(double v) {
  const size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[bucket];
  sum_ += v;
  ++count_;
}

Histogram::Snapshot Histogram::Take() const {
  Snapshot s;
  s.upper_bounds = bounds_;
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t running = 0;
  for (uint64_t c : counts_) {
    running += c;
    s.cumulative.push_back(running);
  }
  s.sum = sum_;
  s.count = count_;
  return s;
}

template <typename T>
T& Family<T>::With(const std::vector<std::string>& values) {
  CHECK_EQ(values.size(), label_names_.size()) << "wrong number of label values";
  std::lock_guard<std::mutex> lock(mu_);
  std::unique_ptr<T>& child = children_[values];
  if (child == nullptr) {
    if constexpr (std::is_same_v<T, Histogram>) {
      child = std::make_unique<Histogram>(buckets_);
    } else {
      child = std::make_unique<T>();
    }
  }
  return *child;
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

struct Registry::Entry {
  std::string name, help, type;
  std::variant<std::unique_ptr<Family<Counter>>, std::unique_ptr<Family<Gauge>>,
               std::unique_ptr<Family<Histogram>>>
      family;
};

Registry::Registry(Labels constant_labels) : constant_(std::move(constant_labels)) {}
Registry::~Registry() = default;

Family<Counter>& Registry::AddCounter(const std::string& name, const std::string& help,
                                      std::vector<std::string> label_names) {
  auto family = std::unique_ptr<Family<Counter>>(new Family<Counter>(std::move(label_names), {}));
  Family<Counter>& ref = *family;
  entries_.push_back(std::make_unique<Entry>(Entry{name, help, "counter", std::move(family)}));
  return ref;
}

Family<Gauge>& Registry::AddGauge(const std::string& name, const std::string& help,
                                  std::vector<std::string> label_names) {
  auto family = std::unique_ptr<Family<Gauge>>(new Family<Gauge>(std::move(label_names), {}));
  Family<Gauge>& ref = *family;
  entries_.push_back(std::make_unique<Entry>(Entry{name, help, "gauge", std::move(family)}));
  return ref;
}

Family<Histogram>& Registry::AddHistogram(const std::string& name, const std::string& help,
                                          std::vector<double> buckets,
                                          std::vector<std::string> label_names) {
  auto family = std::unique_ptr<Family<Histogram>>(
      new Family<Histogram>(std::move(label_names), std::move(buckets)));
  Family<Histogram>& ref = *family;
  entries_.push_back(std::make_unique<Entry>(Entry{name, help, "histogram", std::move(family)}));
  return ref;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buffer[64];
  const std::to_chars_result r = std::to_chars(buffer, buffer + sizeof(buffer), v);
  return std::string(buffer, r.ptr);
}

std::string FormatLabels(const Labels& labels) {
  if (labels.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i > 0) out += ",";
    out += labels[i].first;
    out += "=\"";
    for (char c : labels[i].second) {
      if (c == '\\') {
        out += "\\\\";
      } else if (c == '"') {
        out += "\\\"";
      } else if (c == '\n') {
        out += "\\n";
      } else {
        out += c;
      }
    }
    out += "\"";
  }
  return out + "}";
}

namespace {

std::string EscapeHelp(const std::string& help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

Labels Join(const Labels& constant, const std::vector<std::string>& names,
            const std::vector<std::string>& values) {
  Labels labels = constant;
  for (size_t i = 0; i < names.size(); ++i) labels.emplace_back(names[i], values[i]);
  return labels;
}

}  // namespace

std::string Registry::Exposition() const {
  std::string out;
  for (const std::unique_ptr<Entry>& e : entries_) {
    absl::StrAppend(&out, "# HELP ", e->name, " ", EscapeHelp(e->help), "\n");
    absl::StrAppend(&out, "# TYPE ", e->name, " ", e->type, "\n");
    std::visit(
        [&](const auto& family) {
          using F = std::decay_t<decltype(*family)>;
          std::lock_guard<std::mutex> lock(family->mu_);
          for (const auto& [values, child] : family->children_) {
            const Labels labels = Join(constant_, family->label_names_, values);
            if constexpr (std::is_same_v<F, Family<Histogram>>) {
              const Histogram::Snapshot s = child->Take();
              for (size_t b = 0; b <= s.upper_bounds.size(); ++b) {
                Labels with_le = labels;
                with_le.emplace_back(
                    "le", b < s.upper_bounds.size() ? FormatValue(s.upper_bounds[b]) : "+Inf");
                absl::StrAppend(&out, e->name, "_bucket", FormatLabels(with_le), " ",
                                s.cumulative[b], "\n");
              }
              absl::StrAppend(&out, e->name, "_sum", FormatLabels(labels), " ", FormatValue(s.sum),
                              "\n");
              absl::StrAppend(&out, e->name, "_count", FormatLabels(labels), " ", s.count, "\n");
            } else {
              absl::StrAppend(&out, e->name, FormatLabels(labels), " ", FormatValue(child->value()),
                              "\n");
            }
          }
        },
        e->family);
  }
  return out;
}

}  // namespace kvfold::metrics
