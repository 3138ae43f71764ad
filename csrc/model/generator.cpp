#include "model/generator.h"

#include <chrono>

#include "model/model.h"

namespace bitnet::model {

const Vocab& Generator::vocab() const { return model_->vocab(); }

namespace {
constexpr std::chrono::milliseconds kPoll{50};
}  // namespace

Generator::Generator(std::shared_ptr<Model> model, std::shared_ptr<Sequence> seq)
    : model_(std::move(model)), seq_(std::move(seq)) {}

Generator::~Generator() {
  if (!seq_->finished()) model_->scheduler().cancel(seq_);
}

std::string Generator::step() {
  if (ended_) return "";
  for (;;) {
    bool ended = false;
    std::string piece = seq_->wait_text(kPoll, &ended);
    if (ended) {
      ended_ = true;
      seq_->rethrow_error();
      return piece;
    }
    if (!piece.empty()) return piece;
    if (interrupt_check_ && interrupt_check_()) cancel();
  }
}

void Generator::run(const std::function<bool(const std::string&)>& on_text) {
  try {
    while (!ended_) {
      const std::string piece = step();
      if (!piece.empty() && on_text && on_text(piece)) {
        finish_early();
        return;
      }
    }
  } catch (...) {
    finish_early();
    throw;
  }
}

void Generator::cancel() { model_->scheduler().cancel(seq_); }

void Generator::finish_early() {
  if (ended_) return;
  cancel();
  while (!seq_->wait_finished(kPoll)) {
  }
  ended_ = true;
}

}  // namespace bitnet::model
