#include "server/cluster/key_value_store.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace kvfold::cluster {

void KeyValueStore::Set(const std::string& key, std::string value) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    values_[key] = std::move(value);
  }
  changed_.notify_all();
}

absl::StatusOr<std::vector<std::string>> KeyValueStore::Get(const std::vector<std::string>& keys,
                                                            absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  const auto all_set = [&] {
    for (const std::string& key : keys) {
      if (!values_.contains(key)) return false;
    }
    return true;
  };
  if (!changed_.wait_for(lock, absl::ToChronoNanoseconds(timeout), all_set)) {
    for (const std::string& key : keys) {
      if (!values_.contains(key)) {
        return absl::DeadlineExceededError(absl::StrCat("rendezvous store: timed out after ",
                                                        absl::FormatDuration(timeout),
                                                        " waiting for key '", key, "'"));
      }
    }
  }
  std::vector<std::string> out;
  out.reserve(keys.size());
  for (const std::string& key : keys) out.push_back(values_.at(key));
  return out;
}

}  // namespace kvfold::cluster
