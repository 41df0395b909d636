// examples/03_small_transformer/train.hpp: the text, its batches, AdamW with
// global-norm gradient clipping and a warmup + cosine schedule, and the
// training step that puts them together (Trainer).
#pragma once

#include "model.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace small_lm {

/// A byte text split into a training part and a held-out validation tail.
class Corpus {
 public:
  /// The last `validation_fraction` of the bytes are held out (the end of the
  /// text, not a random sample, so no training window overlaps them).
  Corpus(std::vector<std::uint8_t> bytes, double validation_fraction, Eigen::Index seq_len)
      : bytes_(std::move(bytes)), seq_len_(seq_len) {
    if (!(validation_fraction > 0.0 && validation_fraction < 1.0)) {
      throw std::invalid_argument("small_lm::Corpus: validation_fraction must be in (0, 1), got " +
                                  std::to_string(validation_fraction));
    }
    split_ = static_cast<std::size_t>(static_cast<double>(bytes_.size()) * (1.0 - validation_fraction));
    const auto window = static_cast<std::size_t>(seq_len + 1);
    if (seq_len <= 0 || split_ < window || bytes_.size() - split_ < window) {
      throw std::invalid_argument("small_lm::Corpus: the text (" + std::to_string(bytes_.size()) +
                                  " bytes) is too short for a training and a validation window of " +
                                  std::to_string(window) + " bytes");
    }
  }

  static Corpus from_file(const std::filesystem::path& path, double validation_fraction, Eigen::Index seq_len) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open the text file '" + path.string() + "'");
    std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return Corpus(std::move(bytes), validation_fraction, seq_len);
  }

  std::size_t size() const { return bytes_.size(); }
  /// The whole text, as read (training part first).
  std::span<const std::uint8_t> bytes() const { return bytes_; }
  std::size_t training_bytes() const { return split_; }
  std::size_t validation_bytes() const { return bytes_.size() - split_; }

  /// `sequences` windows at uniform random offsets in the training part.
  Batch training_batch(Eigen::Index sequences, std::mt19937_64& rng) const {
    std::uniform_int_distribution<std::size_t> offset(0, split_ - static_cast<std::size_t>(seq_len_ + 1));
    std::vector<std::size_t> starts(static_cast<std::size_t>(sequences));
    for (auto& s : starts) s = offset(rng);
    return batch_at(starts);
  }

  /// Up to `max_sequences` consecutive windows of the validation part, from
  /// its start (the same every call); they overlap in one byte only.
  Batch validation_batch(Eigen::Index max_sequences) const {
    const std::size_t window = static_cast<std::size_t>(seq_len_ + 1);
    // Consecutive windows share their boundary byte, so every byte after the
    // first is a target exactly once.
    const std::size_t available = (validation_bytes() - 1) / static_cast<std::size_t>(seq_len_);
    std::vector<std::size_t> starts(std::min(available, static_cast<std::size_t>(std::max<Eigen::Index>(max_sequences, 0))));
    for (std::size_t i = 0; i < starts.size(); ++i) starts[i] = split_ + i * (window - 1);
    return batch_at(starts);
  }

  /// Perplexity of the add-one-smoothed byte unigram model of the training
  /// part on the targets of `batch`: the bar a language model must clear.
  double unigram_perplexity(const Batch& batch) const {
    std::vector<double> counts(256, 1.0);
    for (std::size_t i = 0; i < split_; ++i) counts[bytes_[i]] += 1.0;
    const double total = static_cast<double>(split_) + 256.0;
    double nll = 0;
    for (Eigen::Index s = 0; s < batch.sequences; ++s) {
      for (Eigen::Index t = 0; t < batch.seq_len; ++t) nll -= std::log(counts[batch.target(s, t)] / total);
    }
    return std::exp(nll / static_cast<double>(batch.sequences * batch.seq_len));
  }

 private:
  Batch batch_at(const std::vector<std::size_t>& starts) const {
    Batch b;
    b.sequences = static_cast<Eigen::Index>(starts.size());
    b.seq_len = seq_len_;
    const std::size_t window = static_cast<std::size_t>(seq_len_ + 1);
    b.bytes.reserve(starts.size() * window);
    for (std::size_t s : starts) b.bytes.insert(b.bytes.end(), bytes_.begin() + static_cast<std::ptrdiff_t>(s),
                                                bytes_.begin() + static_cast<std::ptrdiff_t>(s + window));
    return b;
  }

  std::vector<std::uint8_t> bytes_;
  Eigen::Index seq_len_;
  std::size_t split_ = 0;
};

struct OptimizerOptions {
  double learning_rate = 3e-3;  ///< peak
  double beta1 = 0.9;
  double beta2 = 0.95;
  double epsilon = 1e-8;
  double weight_decay = 0.1;    ///< decoupled, matrices only (not norms γ, not clips)
  double clip_norm = 1.0;       ///< global gradient norm limit; 0 = off
  int warmup_steps = 20;
  int total_steps = 300;
  double final_fraction = 0.1;  ///< the cosine ends at this fraction of the peak

  /// Linear warmup to the peak, then cosine decay to final_fraction·peak.
  double rate(int step) const {
    if (step < warmup_steps) return learning_rate * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
    const double span = std::max(1, total_steps - warmup_steps);
    const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / span);
    const double cosine = 0.5 * (1.0 + std::cos(progress * 3.14159265358979323846));
    return learning_rate * (final_fraction + (1.0 - final_fraction) * cosine);
  }
};

/// AdamW (Loshchilov & Hutter 2019) over every tensor of a Parameters.
template <class Scalar>
class AdamW {
 public:
  AdamW(const Config& c, OptimizerOptions options)
      : options_(options), m_(Parameters<Scalar>::zeros(c)), v_(Parameters<Scalar>::zeros(c)) {
    auto fail = [](const std::string& what) { throw std::invalid_argument("small_lm::AdamW: " + what); };
    const auto& o = options_;
    if (!(o.learning_rate >= 0 && std::isfinite(o.learning_rate))) fail("learning_rate must be finite and >= 0");
    if (!(o.beta1 >= 0 && o.beta1 < 1)) fail("beta1 must be in [0, 1), got " + std::to_string(o.beta1));
    if (!(o.beta2 >= 0 && o.beta2 < 1)) fail("beta2 must be in [0, 1), got " + std::to_string(o.beta2));
    if (!(o.epsilon > 0)) fail("epsilon must be > 0");
    if (!(o.weight_decay >= 0 && o.learning_rate * o.weight_decay < 1)) fail("weight_decay must be >= 0 with lr·wd < 1");
    if (!(o.clip_norm >= 0)) fail("clip_norm must be >= 0 (0 = off)");
    if (o.warmup_steps < 1 || o.total_steps < 1) fail("warmup_steps and total_steps must be >= 1");
  }

  /// One step at schedule position `step`, with the gradient scaled down to
  /// the global norm limit (`grad` itself is left as it is). Returns the
  /// gradient's norm before clipping.
  double step(Parameters<Scalar>& p, Parameters<Scalar>& grad, int step) {
    auto params = p.tensors(), grads = grad.tensors(), ms = m_.tensors(), vs = v_.tensors();
    bool same = params.size() == ms.size() && grads.size() == ms.size();
    for (std::size_t i = 0; same && i < ms.size(); ++i) {
      same = params[i].rows == ms[i].rows && params[i].cols == ms[i].cols && grads[i].rows == ms[i].rows &&
             grads[i].cols == ms[i].cols;
    }
    if (!same) throw std::invalid_argument("small_lm::AdamW: p and grad must have the shapes of the optimizer's config");
    double squared = 0;
    for (const auto& g : grads) squared += g.flat().template cast<double>().square().sum();
    const double norm = std::sqrt(squared);
    if (!std::isfinite(norm)) throw std::runtime_error("small_lm::AdamW: the gradient is not finite");
    const double factor = options_.clip_norm > 0 && norm > options_.clip_norm ? options_.clip_norm / norm : 1.0;
    ++t_;
    const double rate = options_.rate(step);
    const double c1 = 1.0 - std::pow(options_.beta1, t_), c2 = 1.0 - std::pow(options_.beta2, t_);
    for (std::size_t i = 0; i < params.size(); ++i) {
      auto x = params[i].flat();
      const auto g = (grads[i].flat() * static_cast<Scalar>(factor)).eval();
      auto m = ms[i].flat();
      auto v = vs[i].flat();
      m = static_cast<Scalar>(options_.beta1) * m + static_cast<Scalar>(1 - options_.beta1) * g;
      v = static_cast<Scalar>(options_.beta2) * v + static_cast<Scalar>(1 - options_.beta2) * g.square();
      if (params[i].decayed) x *= static_cast<Scalar>(1.0 - rate * options_.weight_decay);
      x -= static_cast<Scalar>(rate) * (m / static_cast<Scalar>(c1)) /
           ((v / static_cast<Scalar>(c2)).sqrt() + static_cast<Scalar>(options_.epsilon));
    }
    return norm;
  }

 private:
  OptimizerOptions options_;
  Parameters<Scalar> m_, v_;
  int t_ = 0;
};

/// What one Trainer::step measured: the batch's loss at the parameters
/// before the update, and the gradient's global norm before clipping.
struct StepResult {
  Loss loss;
  double gradient_norm = 0;
};

/// The training loop's step, the one the example, its tests and the oq
/// tool's tests run: the loss and gradient on a batch, on the first step
/// the QAT clips set from that batch (Model::init_clips), an AdamW step at
/// the schedule's position, the clips kept ordered (Model::project_clips).
///
///   small_lm::Trainer<float> trainer(config, regularization, optimizer_options);
///   for (int s = 0; s < optimizer_options.total_steps; ++s) trainer.step(params, corpus.training_batch(8, rng));
template <class Scalar>
class Trainer {
 public:
  Trainer(const Config& c, const Regularization& r, const OptimizerOptions& options)
      : model_(c, r), grad_(Parameters<Scalar>::zeros(c)), optimizer_(c, options) {}

  /// One step on `batch`. `inspect(model, params)` runs between the gradient
  /// and the update: the model's caches then hold this batch's activations
  /// and `params` are still those the loss was taken at (the example logs
  /// its outlier statistics there).
  template <class Inspect>
  StepResult step(Parameters<Scalar>& params, const Batch& batch, Inspect&& inspect) {
    if (steps_ == 0 && model_.regularization().qat_bits != 0) model_.init_clips(params, batch);
    StepResult result;
    result.loss = model_.loss_and_gradient(params, batch, grad_);
    inspect(std::as_const(model_), std::as_const(params));
    result.gradient_norm = optimizer_.step(params, grad_, steps_);
    model_.project_clips(params);
    ++steps_;
    return result;
  }
  StepResult step(Parameters<Scalar>& params, const Batch& batch) {
    return step(params, batch, [](const Model<Scalar>&, const Parameters<Scalar>&) {});
  }

  /// Steps taken so far: the next step's schedule position.
  int steps() const { return steps_; }

 private:
  Model<Scalar> model_;
  Parameters<Scalar> grad_;
  AdamW<Scalar> optimizer_;
  int steps_ = 0;
};

}  // namespace small_lm
