// 02_llama_layer: LLaMA decoder layers quantized W4A4 with every method,
// compared with full precision. See README.md beside this file.
//
//   02_llama_layer                          a synthetic 4-layer LLaMA-2-7B-shaped model with the published
//                                           outlier statistics (synthetic_model.hpp), every layer quantized
//   02_llama_layer --single-layer           the one-layer construction of default_layer.hpp
//   02_llama_layer --checkpoint DIR --layer 1    a Hugging Face checkpoint (safetensors, sharded or not)
//   02_llama_layer --study --seeds 5         the crossed, seeded study (study.hpp; README.md), on one layer of
//                                           the synthetic model (--layer, default 1: the layer that creates the
//                                           massive activations), or the one-layer construction with
//                                           --single-layer, or a checkpoint's layer with --checkpoint
//   02_llama_layer --help
#include "../common/cli.hpp"
#include "../common/study_flags.hpp"
#include "../../tools/llama/checkpoint_layer.hpp"
#include "default_layer.hpp"
#include "../../tools/llama/integer_path.hpp"
#include "../../tools/llama/llama_layer.hpp"
#include "../../tools/llama/methods.hpp"
#include "report.hpp"
#include "study.hpp"
#include "synthetic_run.hpp"

#include <oq/analysis.hpp>
#include <oq/io.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace {

// Every method allocates a few hundred MB of folded weights and frees them
// again. glibc serves blocks above 32 MB with fresh mmaps, and touching
// fresh pages costs a page fault each: on the 2-core VM this example was
// written on, that was half of the run time. Keeping large blocks in the
// heap (no mmap, no trimming) makes later methods reuse the pages the
// earlier ones touched. A tuning of this program, not of the library.
void keep_freed_memory() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, -1);
#endif
}

struct Flags {
  std::optional<std::filesystem::path> checkpoint;
  int layer = 1;
  std::optional<std::filesystem::path> input_npy;
  std::optional<std::filesystem::path> calibration_npy;
  Eigen::Index seq_len = 128;
  Eigen::Index calibration_len = 128;
  int greedy_steps = 256;
  Eigen::Index block_size = 128;
  std::uint64_t seed = 0;
  std::filesystem::path out_dir = "llama_layer_out";
  bool tiny = false;
  bool gptq = false;
  // --study (study.hpp)
  bool study = false;
  examples::cli::StudyFlags study_flags;  // --seeds, --baseline, --resamples, --lwc-steps
  std::size_t windows = 16;
  // The synthetic model (the default without --checkpoint).
  bool single_layer = false;
  int layers = 4;
  int plot_layer = 1;
  bool no_integer = false;
};

// The command line (CLI11: --help lists these with their defaults).
void add_flags(CLI::App& app, Flags& f) {
  using examples::cli::integer;
  app.add_option_function<std::string>(
         "--checkpoint", [&f](const std::string& dir) { f.checkpoint = dir; },
         "Hugging Face LLaMA checkpoint directory (config.json and model.safetensors or "
         "model.safetensors.index.json); without it, the synthetic LLaMA-2-7B-shaped model")
      ->check(CLI::ExistingDirectory);
  app.add_option("--layer", f.layer, "layer index in the checkpoint, or of the synthetic model with --study")->capture_default_str()->check(integer(0));
  app.add_option_function<std::string>(
         "--input", [&f](const std::string& file) { f.input_npy = file; },
         "layer input hidden states [tokens, hidden] or [1, tokens, hidden] (default: embeddings of random token "
         "ids, through the checkpoint's earlier layers when there is one)")
      ->check(CLI::ExistingFile);
  app.add_option_function<std::string>(
         "--calibration", [&f](const std::string& file) { f.calibration_npy = file; },
         "calibration hidden states (default: another random sequence)")
      ->check(CLI::ExistingFile);
  app.add_option("--seq-len", f.seq_len, "evaluation tokens")->capture_default_str()->check(integer<Eigen::Index>(1));
  app.add_option("--calib-len", f.calibration_len, "calibration tokens")
      ->capture_default_str()
      ->check(integer<Eigen::Index>(1));
  app.add_option("--steps", f.greedy_steps, "DuQuant greedy steps per rotation")
      ->capture_default_str()
      ->check(integer(0));
  app.add_option("--block", f.block_size, "DuQuant / Hadamard block size")
      ->capture_default_str()
      ->check(integer<Eigen::Index>(1));
  app.add_option("--seed", f.seed, "seed of the default model or layer, the sequences and DuQuant's Q'")
      ->capture_default_str()
      ->check(integer<std::uint64_t>(0));
  app.add_flag("--tiny", f.tiny, "a small default model or layer (hidden 512, FFN 1408, 8 heads, 2 KV heads)");
  app.add_flag("--gptq", f.gptq,
               "weights by GPTQ (act-order) instead of round-to-nearest, for every method (slow at full size: "
               "minutes per method)");
  app.add_option("--out", f.out_dir, "where the CSV files go")->type_name("DIR")->capture_default_str();
  app.add_flag("--study", f.study,
               "instead of the default run, on one layer (the synthetic model's --layer, the one-layer construction "
               "with --single-layer, or --checkpoint's layer): every point of smoothing x rotation x weights, random rotations over "
               "--seeds seeds, on --windows held-out sequences of --seq-len tokens, with bootstrap intervals "
               "(study.csv, study.md in --out)");
  examples::cli::add_study_flags(app, f.study_flags, "--study: seeds of each random rotation (--seed, --seed + 1, ...)");
  app.add_option("--windows", f.windows, "--study: held-out sequences (the bootstrap's units)")
      ->capture_default_str()
      ->check(integer<std::size_t>(2));
  app.add_flag("--single-layer", f.single_layer,
               "without --checkpoint: the one-layer construction of default_layer.hpp instead of the synthetic model");
  app.add_option("--layers", f.layers, "layers of the synthetic model (the massive activations appear in layer 1)")
      ->capture_default_str()
      ->check(integer(1, 64));
  app.add_option("--plot-layer", f.plot_layer,
                 "synthetic model: the layer whose linear inputs go to channel_magnitudes.csv (-1: none)")
      ->capture_default_str()
      ->check(integer(-1, 63));
  app.add_flag("--no-integer", f.no_integer, "synthetic model: skip the integer-kernel path (faster)");
}

// Progress on stderr: one line rewritten in place on a terminal, one line per
// message in a log.
bool stderr_is_terminal() {
  static const bool terminal = isatty(STDERR_FILENO) != 0;
  return terminal;
}
void progress(const std::string& line) {
  if (stderr_is_terminal()) {
    std::cerr << "\r\033[K" << line << std::flush;
  } else {
    std::cerr << line << '\n';
  }
}
void progress_done() {
  if (stderr_is_terminal()) std::cerr << "\r\033[K" << std::flush;
}

// --tiny: hidden 512, FFN 1408, 8 heads (2 KV heads) of 64.
void make_tiny(llama::Config& config) {
  config.hidden_size = 512;
  config.intermediate_size = 1408;
  config.num_attention_heads = 8;
  config.num_key_value_heads = 2;
  config.head_dim = 64;
}

// The default run: the synthetic model, every layer, every method (synthetic_run.hpp).
int run_synthetic(const Flags& f) {
  if (f.input_npy || f.calibration_npy) {
    throw std::invalid_argument("--input and --calibration need --checkpoint or --single-layer (the synthetic model "
                                "runs on its own token sequences)");
  }
  llama::SyntheticRunOptions o;
  if (f.tiny) make_tiny(o.config);
  o.model.seed = f.seed;
  o.model.layers = f.layers;
  o.seq_len = f.seq_len;
  o.calibration_len = f.calibration_len;
  o.sequence_seed = f.seed;
  o.quant.block_size = f.block_size;
  o.quant.greedy_steps = f.greedy_steps;
  o.quant.seed = f.seed;
  o.quant.gptq = f.gptq;
  o.quant.head_dim = o.config.head_dim;  // QuaRot's head-wise Hadamard folded into v_proj
  o.integer = !f.no_integer;
  o.plot_layer = f.plot_layer;
  o.out_dir = f.out_dir;
  o.progress = progress;
  o.progress_done = progress_done;
  o.quant.progress = progress;
  return llama::run_synthetic_model(o, std::cout);
}

llama::Matrix<float> load_npy_input(const std::filesystem::path& path, Eigen::Index hidden) {
  llama::Matrix<float> x = oq::io::read_npy_matrix<float>(path);
  if (x.cols() != hidden) {
    throw std::invalid_argument(path.string() + ": hidden size " + std::to_string(x.cols()) + ", the layer has " +
                                std::to_string(hidden));
  }
  return x;
}

// --study: the windows are sequences drawn as the evaluation sequence is
// (seeds seed + 1, seed + 3, …: never the calibration's seed + 2).
void run_study(const Flags& flags, const llama::Config& config, const llama::LayerWeights<float>& weights,
               const std::function<llama::Matrix<float>(std::uint64_t, Eigen::Index)>& sequence,
               const llama::Matrix<float>& x_calibration) {
  if (flags.input_npy) throw std::invalid_argument("--study draws its own windows: --input does not apply");
  if (flags.gptq) throw std::invalid_argument("--study runs GPTQ weights as points of the cross: --gptq does not apply");
  llama::study::StudyOptions options;
  options.quant.block_size = flags.block_size;
  options.quant.greedy_steps = flags.greedy_steps;
  options.quant.seed = flags.seed;
  options.quant.lwc.steps = flags.study_flags.lwc_steps;
  options.quant.head_dim = config.head_dim;  // QuaRot's head-wise Hadamard folded into v_proj
  options.seeds = flags.study_flags.seeds;
  options.bootstrap.resamples = flags.study_flags.resamples;
  options.progress = progress;
  options.specs = flags.study_flags.selected_specs(llama::study_method_specs());
  options.baseline = flags.study_flags.baseline_spec(llama::study_method_specs());
  std::vector<llama::Matrix<float>> windows;
  for (std::size_t w = 0; w < flags.windows; ++w) {
    progress("study: window " + std::to_string(w + 1) + "/" + std::to_string(flags.windows));
    windows.push_back(sequence(flags.seed + 1 + 2 * static_cast<std::uint64_t>(w), flags.seq_len));
  }
  if (x_calibration.rows() < config.intermediate_size) {
    std::cerr << "02_llama_layer: note: GPTQ's points calibrate on " << x_calibration.rows()
              << " tokens, fewer than the down_proj input's width (" << config.intermediate_size
              << "): its Hessian has rank <= " << x_calibration.rows() << " and GPTQ may overfit (--calib-len)\n";
  }
  const llama::LinearInputs<float> calibration = llama::record_inputs(config, weights, x_calibration);
  const llama::study::StudyResult result = llama::study::run_study(config, weights, windows, calibration, options);
  progress_done();
  std::filesystem::create_directories(flags.out_dir);
  std::ofstream csv(flags.out_dir / "study.csv"), md(flags.out_dir / "study.md");
  llama::study::write_csv(csv, result);
  llama::study::write_markdown(md, result);
  csv.close();
  md.close();
  if (!csv || !md) throw std::runtime_error("cannot write study.csv / study.md in '" + flags.out_dir.string() + "'");
  llama::study::write_markdown(std::cout, result);
  std::cout << "\n" << (flags.out_dir / "study.csv").string() << ", " << (flags.out_dir / "study.md").string() << "\n";
}

}  // namespace

int main(int argc, char** argv) try {
  keep_freed_memory();
  Flags flags;
  CLI::App app{"LLaMA decoder layers (a synthetic model with the published outlier statistics, or a checkpoint's "
               "layer) quantized W4A4 with RTN, SmoothQuant, block Hadamard, DuQuant, DuQuant + smoothing and QuaRot, "
               "each by fake quantization and by oq::cpu's integer kernels, against full precision (see "
               "examples/02_llama_layer/README.md).",
               "02_llama_layer"};
  add_flags(app, flags);
  if (const std::optional<int> status = examples::cli::parse(app, argc, argv)) return *status;
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  // --study runs on one layer: the synthetic model's, the one-layer construction's or the checkpoint's.
  if (!flags.checkpoint && !flags.single_layer && !flags.study) {
    const int status = run_synthetic(flags);
    std::cout << "total time " << std::chrono::duration<double>(Clock::now() - t0).count() << " s\n";
    return status;
  }

  // 1. The layer and its two input sequences (evaluation, calibration).
  llama::Config config;
  llama::LayerWeights<float> weights;
  llama::Matrix<float> x, x_calibration;
  std::string source;
  std::function<llama::Matrix<float>(std::uint64_t, Eigen::Index)> sequence;  // (seed, tokens): a held-out sequence
  if (flags.checkpoint) {
    progress("loading " + flags.checkpoint->string());
    // Shared with `sequence`, which --study calls after this block.
    const auto model = std::make_shared<const llama::CheckpointModel>(*flags.checkpoint);
    config = model->config();
    weights = model->layer(flags.layer);
    source = flags.checkpoint->string() + ", layer " + std::to_string(flags.layer);
    const int layer = flags.layer;
    auto through_earlier_layers = [model, layer](std::uint64_t seed, Eigen::Index tokens) {
      return model->hidden_states_before(layer, model->random_token_ids(tokens, seed), progress);
    };
    sequence = through_earlier_layers;
    x = flags.input_npy ? load_npy_input(*flags.input_npy, config.hidden_size)
                        : through_earlier_layers(flags.seed + 1, flags.seq_len);
    x_calibration = flags.calibration_npy ? load_npy_input(*flags.calibration_npy, config.hidden_size)
                                          : through_earlier_layers(flags.seed + 2, flags.calibration_len);
  } else if (!flags.single_layer) {
    // --study on the synthetic model: layer --layer, its inputs the hidden
    // states that the layers before it produce from the model's own token
    // sequences (BOS and delimiters included, so the massive tokens are where
    // Sun et al. find them).
    if (flags.input_npy || flags.calibration_npy) {
      throw std::invalid_argument("--input and --calibration need --checkpoint or --single-layer (the synthetic "
                                  "model runs on its own token sequences)");
    }
    if (flags.tiny) make_tiny(config);
    llama::SyntheticModelOptions model_options;
    model_options.seed = flags.seed;
    model_options.layers = flags.layers;
    if (flags.layer >= flags.layers) {
      throw std::invalid_argument("--layer must be below --layers (" + std::to_string(flags.layers) + "), got " +
                                  std::to_string(flags.layer));
    }
    progress("building the synthetic model");
    const auto model = std::make_shared<const llama::SyntheticModel<float>>(
        llama::synthetic_model<float>(config, model_options));
    weights = model->layers[static_cast<std::size_t>(flags.layer)];
    const int layer = flags.layer;
    sequence = [model, model_options, layer](std::uint64_t seed, Eigen::Index tokens) {
      llama::Matrix<float> h = llama::embed(*model, llama::synthetic_token_ids(tokens, seed, model_options));
      for (int l = 0; l < layer; ++l) h = llama::forward(model->config, model->layers[static_cast<std::size_t>(l)], h);
      return h;
    };
    source = "synthetic model (seed " + std::to_string(flags.seed) + "), layer " + std::to_string(flags.layer) +
             " of " + std::to_string(flags.layers);
    x = sequence(flags.seed + 1, flags.seq_len);
    x_calibration = sequence(flags.seed + 2, flags.calibration_len);
  } else {
    if (flags.tiny) make_tiny(config);
    progress("building the default layer");
    llama::DefaultLayerOptions options;
    options.seed = flags.seed;
    llama::DefaultLayerLayout layout;
    weights = llama::default_layer<float>(config, options, &layout);
    sequence = [config, options](std::uint64_t seed, Eigen::Index tokens) {
      return llama::default_input<float>(config, tokens, seed, options);
    };
    source = "default LLaMA-2-7B-shaped layer (seed " + std::to_string(flags.seed) + ")";
    x = flags.input_npy ? load_npy_input(*flags.input_npy, config.hidden_size)
                        : llama::default_input<float>(config, flags.seq_len, flags.seed + 1, options);
    x_calibration = flags.calibration_npy ? load_npy_input(*flags.calibration_npy, config.hidden_size)
                                          : llama::default_input<float>(config, flags.calibration_len,
                                                                        flags.seed + 2, options);
    progress_done();
    llama::print_default_layout(std::cout, layout);
  }
  weights.validate(config);
  progress_done();
  std::cout << "layer: " << source << "\n"
            << "shape: hidden " << config.hidden_size << ", FFN " << config.intermediate_size << ", heads "
            << config.num_attention_heads << " (KV " << config.num_key_value_heads << "), head_dim "
            << config.head_dim << "; " << x.rows() << " evaluation tokens, " << x_calibration.rows()
            << " calibration tokens\n\n";

  if (flags.study) {
    run_study(flags, config, weights, sequence, x_calibration);
    std::cout << "total time " << std::chrono::duration<double>(Clock::now() - t0).count() << " s\n";
    return 0;
  }

  // 2. Full precision: the reference output and every linear's input.
  progress("full-precision forward");
  const llama::Matrix<float> y_reference = llama::forward(config, weights, x);
  const llama::LinearInputs<float> fp_inputs = llama::record_inputs(config, weights, x);
  const llama::LinearInputs<float> calibration = llama::record_inputs(config, weights, x_calibration);
  progress_done();
  llama::print_outlier_summary(std::cout, x, y_reference, fp_inputs);

  // 3. Every method: calibrate, quantize, run, measure.
  if (flags.gptq && x_calibration.rows() < config.intermediate_size) {
    // GPTQ fits the weights to the calibration tokens; with fewer tokens than
    // an input's width its Hessian is singular but for the damping.
    std::cerr << "02_llama_layer: note: --gptq with " << x_calibration.rows()
              << " calibration tokens, fewer than the down_proj input's width (" << config.intermediate_size
              << "): its Hessian has rank <= " << x_calibration.rows() << " and GPTQ may overfit (--calib-len)\n";
  }
  llama::QuantOptions options;
  options.block_size = flags.block_size;
  options.greedy_steps = flags.greedy_steps;
  options.seed = flags.seed;
  options.head_dim = config.head_dim;  // QuaRot's head-wise Hadamard folded into v_proj
  options.gptq = flags.gptq;
  options.progress = progress;
  std::vector<llama::MethodResult> results;
  llama::ChannelCsv csv(flags.out_dir / "channel_magnitudes.csv");
  csv.add("full precision", fp_inputs);
  for (llama::Method method : llama::kAllMethods) {
    progress(std::string(llama::method_name(method)) + ": calibrating");
    llama::QuantizedLayer<float> layer = llama::quantize_layer(method, weights, calibration, options);
    progress(std::string(llama::method_name(method)) + ": forward");
    llama::LinearInputs<float> transformed;
    layer.record_transformed_inputs(&transformed);
    const llama::Matrix<float> y = llama::forward(config, weights, x, layer);
    layer.record_transformed_inputs(nullptr);
    results.push_back(llama::measure(method, layer.calibration_seconds(), y, y_reference, transformed));
    csv.add(llama::method_name(method), transformed);
    // The same method with oq::cpu's integer kernels, each linear compared
    // with fake quantization on the same input.
    progress(std::string(llama::method_name(method)) + ": integer kernels");
    llama::IntegerLayer integer(layer);
    integer.compare_into(&results.back().agreement);
    results.back().integer_error = llama::relative_error(llama::forward(config, weights, x, integer), y_reference);
    progress_done();
  }
  llama::print_results(std::cout, results, fp_inputs, flags.gptq);
  llama::print_integer_results(std::cout, results);
  std::cout << "\nper-channel magnitudes: " << csv.path().string()
            << " (draw with: python3 examples/02_llama_layer/plot_channels.py " << csv.path().string() << ")\n";
  std::cout << "total time " << std::chrono::duration<double>(Clock::now() - t0).count() << " s\n";
  return 0;
} catch (const std::exception& e) {
  progress_done();
  std::cerr << "02_llama_layer: " << e.what() << "\n";
  return 1;
}
