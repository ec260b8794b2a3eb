// Counters, gauges and histograms with labels, and their Prometheus text exposition (format
// 0.0.4). prometheus-cpp is not packaged in Debian 12, so this is the small part of it kvfold
// needs; tests check the output with `promtool check metrics`.
//
// Thread-safe: updates from the engine thread, scrapes from HTTP threads.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace kvfold::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void Add(double v = 1.0) { value_.fetch_add(v, std::memory_order_relaxed); }
  // For counters mirrored from a cumulative source (the engine's own counts).
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);  // sorted, +Inf implied
  void Observe(double v);
  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Take() const;

 private:
  const std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// A metric name with fixed label names; one child per set of label values.
template <typename T>
class Family {
 public:
  // Children are created on first use and live as long as the family.
  T& With(const std::vector<std::string>& values);

 private:
  friend class Registry;
  Family(std::vector<std::string> label_names, std::vector<double> buckets)
      : label_names_(std::move(label_names)), buckets_(std::move(buckets)) {}
  std::vector<std::string> label_names_;
  std::vector<double> buckets_;  // histograms only
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_;
};

class Registry {
 public:
  // `constant_labels` go on every series (e.g. model_name).
  explicit Registry(Labels constant_labels = {});
  ~Registry();

  Family<Counter>& AddCounter(const std::string& name, const std::string& help,
                              std::vector<std::string> label_names = {});
  Family<Gauge>& AddGauge(const std::string& name, const std::string& help,
                          std::vector<std::string> label_names = {});
  Family<Histogram>& AddHistogram(const std::string& name, const std::string& help,
                                  std::vector<double> buckets,
                                  std::vector<std::string> label_names = {});

  // Every family in registration order, as Prometheus text format 0.0.4.
  std::string Exposition() const;

 private:
  struct Entry;
  Labels constant_;
  std::vector<std::unique_ptr<Entry>> entries_;
};

// Prometheus number formatting: shortest round-trip decimal, +Inf, -Inf, NaN.
std::string FormatValue(double v);
// `{a="x",b="y"}` with \, " and newline escaped; "" when there are no labels.
std::string FormatLabels(const Labels& labels);

}  // namespace kvfold::metrics
