import Foundation
import MLXEngine

/// Stage-by-stage comparison with a reference fixture folder made by DeepSeek's PyTorch code (the layout of
/// `shared/fixtures/tiny`: model/, vae/, io.safetensors, io.json). Used by the tests and `janusflow parity`.
public struct ParityReport {
    /// One compared stage: its largest errors against the reference and whether it passed.
    public struct Row: CustomStringConvertible {
        /// The stage, named as its reference tensor in `io.safetensors` (such as `gen.velocity_cfg`).
        public let name: String
        /// Largest elementwise `|x - ref|`; infinity on a shape mismatch or when an element is NaN.
        public let maxAbsError: Double
        /// Largest elementwise `|x - ref| / max(|ref|, 1e-6)`; infinity on a shape mismatch.
        public let maxRelError: Double
        /// The bound each element must meet:
        /// |x - ref| <= tolerance * (1 + |ref|) elementwise.
        public let tolerance: Double
        /// Whether every element met `tolerance` (false on a shape mismatch or a NaN).
        public let passed: Bool
        /// Extra context printed after the numbers (a shape mismatch, how a stage was run); empty if none.
        public let note: String

        /// One aligned line: `ok` or `FAIL`, the name, both errors, the tolerance and the note.
        public var description: String {
            let status = passed ? "ok  " : "FAIL"
            return "\(status) \(name.padding(toLength: 28, withPad: " ", startingAt: 0)) max abs \(String(format: "%.3e", maxAbsError))  max rel \(String(format: "%.3e", maxRelError))  tol \(String(format: "%.0e", tolerance))\(note.isEmpty ? "" : "  \(note)")"
        }
    }

    /// The stages compared, in the order they ran.
    public var rows: [Row] = []
    /// True when at least one stage was compared and every stage passed.
    public var passed: Bool { !rows.isEmpty && rows.allSatisfy(\.passed) }
}

/// Checks the Swift model stage by stage against fixtures made with DeepSeek's PyTorch code.
public enum Parity {
    /// Single stages: 1e-4; multi-step sampling and the VAE: 1e-3 (the fixture README's suggested bounds).
    public static let stageTolerance = 1e-4
    /// Tolerance for multi-step sampling and the VAE with float32 weights: 1e-3.
    public static let chainTolerance = 1e-3

    /// Compares `actual` with `reference` elementwise; the row passes when `|x - ref| <= tolerance * (1 + |ref|)`
    /// everywhere. Different shapes give a failed row rather than an error.
    /// - Throws: when either tensor's values cannot be read back.
    public static func compare(_ name: String, _ actual: Tensor, _ reference: Tensor, tolerance: Double, note: String = "") throws -> ParityReport.Row {
        guard actual.shape == reference.shape else {
            return .init(name: name, maxAbsError: .infinity, maxRelError: .infinity, tolerance: tolerance, passed: false,
                         note: "shape \(actual.shape) vs reference \(reference.shape)")
        }
        let a = try actual.values(Double.self), r = try reference.values(Double.self)
        var maxAbs = 0.0, maxRel = 0.0, ok = true
        for (x, y) in zip(a, r) {
            let d = Swift.abs(x - y)
            if !(d <= tolerance * (1 + Swift.abs(y))) { ok = false }
            maxAbs = Swift.max(maxAbs, d.isNaN ? .infinity : d)
            maxRel = Swift.max(maxRel, d / Swift.max(Swift.abs(y), 1e-6))
        }
        return .init(name: name, maxAbsError: maxAbs, maxRelError: maxRel, tolerance: tolerance, passed: ok, note: note)
    }

    /// The reference tensors and index of a fixture folder.
    public struct Fixture {
        /// The fixture folder.
        public let directory: URL
        /// Every tensor of `io.safetensors`, by name.
        public let tensors: [String: Tensor]
        /// The parsed `io.json`: special token ids, geometry and other metadata.
        public let index: [String: Any]

        /// Reads `io.safetensors` and `io.json` from `directory`.
        /// - Throws: when either file cannot be read or `io.json` is not a JSON object.
        public init(directory: URL) throws {
            self.directory = directory
            let io = directory.appendingPathComponent("io.safetensors")
            tensors = try Safetensors.load(io).tensors
            let json = directory.appendingPathComponent("io.json")
            guard let data = FileManager.default.contents(atPath: json.path),
                  let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
            else { throw ModelLoadingError("\(json.path): missing or not a JSON object") }
            index = object
        }

        /// The reference tensor `name`, or nil when the fixture lacks it.
        public subscript(_ name: String) -> Tensor? { tensors[name] }

        /// The reference tensor `name`; throws `ModelLoadingError` when the fixture lacks it.
        public func require(_ name: String) throws -> Tensor {
            guard let t = tensors[name] else { throw ModelLoadingError("\(directory.path)/io.safetensors: no tensor '\(name)'") }
            return t
        }

        /// The token id `special_ids.<name>` of `io.json` (such as `pad`); throws `ModelLoadingError` when it is missing.
        public func specialID(_ name: String) throws -> Int {
            guard let ids = index["special_ids"] as? [String: Any], let v = ids[name] as? Int else {
                throw ModelLoadingError("\(directory.path)/io.json: missing special_ids.\(name)")
            }
            return v
        }

        /// `geometry.cfg_weight` of `io.json`, or 2.0 when absent.
        public var cfgWeight: Double {
            ((index["geometry"] as? [String: Any])?["cfg_weight"] as? Double) ?? 2.0
        }

        /// Tensors named prefix.0, prefix.1, ... in order.
        public func numbered(_ prefix: String) -> [Tensor] {
            var out: [Tensor] = []
            while let t = tensors["\(prefix).\(out.count)"] { out.append(t) }
            return out
        }
    }

    /// Looser bounds for bfloat16 weights (float32 activations): bf16 keeps 8 significant bits, so single
    /// stages land within about 1e-2 relative of the float32 reference.
    public static let bfloat16StageTolerance = 5e-2
    /// Tolerance for multi-step sampling and the VAE with bfloat16 weights: 1e-1.
    public static let bfloat16ChainTolerance = 1e-1
    /// int8 language-model weights: a group's step is 1/127 of its largest weight, an absolute error that costs
    /// small weights more than bf16's 8 bits do; measured errors are about twice bf16's, so the bounds are twice.
    public static let int8StageTolerance = 1e-1
    /// Tolerance for multi-step sampling and the VAE with int8 language-model weights: 2e-1.
    public static let int8ChainTolerance = 2e-1

    /// Loads the fixture's `model/` folder and compares every stage the fixture holds (understanding encoder,
    /// prompt embeddings, hidden states, logits and greedy decoding, generation encoder, one CFG velocity, the Euler
    /// sampler, and the VAE when `vae/` exists), with bounds chosen by `weights`; `log` sees each row as it is added.
    ///
    /// `weights` is the dtype the model's weights are held in (float32 for exact parity; bfloat16 checks the
    /// release precision with looser bounds, and compares greedy steps by their logits, not token identity;
    /// int8 quantizes the language model's linear layers and loads the rest in bfloat16).
    public static func run(fixtureDirectory: URL, weights: DType = .float32,
                           log: ((ParityReport.Row) -> Void)? = nil) throws -> ParityReport {
        let fx = try Fixture(directory: fixtureDirectory)
        let model = try JanusFlowModel.load(directory: fixtureDirectory.appendingPathComponent("model"), dtype: weights)
        let exact = weights == .float32
        let stageTolerance = exact ? Parity.stageTolerance : weights == .int8 ? int8StageTolerance : bfloat16StageTolerance
        let chainTolerance = exact ? Parity.chainTolerance : weights == .int8 ? int8ChainTolerance : bfloat16ChainTolerance
        var report = ParityReport()
        func add(_ row: ParityReport.Row) {
            report.rows.append(row)
            log?(row)
        }
        let tol = stageTolerance

        // a: understanding encoder.
        if let pixels = fx["und.pixel_values"] {
            let tower = model.understandingEncoder.visionTower
            if let ref = fx["und.siglip_embed"] { add(try compare("und.siglip_embed", tower.embed(pixels), ref, tolerance: tol)) }
            var blocks: [Tensor] = []
            let features = tower(pixels) { _, x in blocks.append(x) }
            for (i, ref) in fx.numbered("und.siglip_block").enumerated() where i < blocks.count {
                add(try compare("und.siglip_block.\(i)", blocks[i], ref, tolerance: tol))
            }
            if let ref = fx["und.siglip_features"] { add(try compare("und.siglip_features", features, ref, tolerance: tol)) }
            if let ref = fx["und.aligned"] { add(try compare("und.aligned", model.understandingAligner(features), ref, tolerance: tol)) }
        }

        // b: understanding prompt, logits, greedy decoding.
        if let ids = fx["und.input_ids"], let pixels = fx["und.prompt_pixel_values"], let seqMask = fx["und.images_seq_mask"] {
            let embeds = model.prepareInputsEmbeds(ids: ids, pixels: pixels, imageSeqMask: seqMask)
            if let ref = fx["und.inputs_embeds"] { add(try compare("und.inputs_embeds", embeds, ref, tolerance: tol)) }
            let out = model.languageModel.forward(inputsEmbeds: embeds, keyMask: fx["und.attention_mask"], collectHiddenStates: true)
            for (i, ref) in fx.numbered("und.hidden_states").enumerated() where i < out.hiddenStates.count {
                add(try compare("und.hidden_states.\(i)", out.hiddenStates[i], ref, tolerance: tol))
            }
            if let ref = fx["und.logits"] { add(try compare("und.logits", model.languageModel.logits(out.lastHiddenState), ref, tolerance: tol)) }
            if let ref = fx["und.greedy_tokens"] {
                let count = ref.dim(-1)
                let decoded = try TextDecoder.greedyTokens(model: model, inputsEmbeds: embeds, count: count, stopTokens: [])
                let refIDs = try ref.values(Int.self)
                let same = decoded.tokens == refIDs
                if exact {
                    add(.init(name: "und.greedy_tokens", maxAbsError: same ? 0 : 1, maxRelError: same ? 0 : 1, tolerance: 0, passed: same,
                              note: same ? "\(count) tokens identical" : "got \(decoded.tokens), expected \(refIDs)"))
                }
                if let stepRef = fx["und.greedy_step_logits"] {
                    // Step k's logits depend on the tokens before k: compare the steps whose history matches.
                    let comparable = (Array(zip(decoded.tokens, refIDs)).firstIndex { $0.0 != $0.1 } ?? count - 1) + 1
                    add(try compare("und.greedy_step_logits", stacked(Array(decoded.stepLogits.prefix(comparable)), axis: 0),
                                    stepRef.slice(axis: 0, 0, comparable), tolerance: tol,
                                    note: comparable == count ? "KV-cached" : "KV-cached, first \(comparable) steps (token \(comparable - 1) differs)"))
                }
            }
        }

        // c: generation encoder.
        if let z = fx["gen.z"], let t = fx["gen.t"] {
            let enc = model.generationEncoder
            let zNHWC = NN.nchwToNHWC(z)
            if let ref = fx["gen.t_proj"] { add(try compare("gen.t_proj", enc.timeFeatures(t), ref, tolerance: tol)) }
            if let ref = fx["gen.in_conv"] { add(try compare("gen.in_conv", NN.nhwcToNCHW(enc.patchify(zNHWC)), ref, tolerance: tol)) }
            let (features, tEmb) = enc(zNHWC, t: t)
            if let ref = fx["gen.z_emb"] { add(try compare("gen.z_emb", NN.nhwcToNCHW(features), ref, tolerance: tol)) }
            if let ref = fx["gen.t_emb"] { add(try compare("gen.t_emb", tEmb, ref, tolerance: tol)) }
            if let ref = fx["gen.hs.0"] { add(try compare("gen.hs.0", NN.nhwcToNCHW(features), ref, tolerance: tol)) }
            if let ref = fx["gen.z_emb_aligned"] {
                let (b, h, w, c) = (features.dim(0), features.dim(1), features.dim(2), features.dim(3))
                add(try compare("gen.z_emb_aligned", model.generationEncoderAligner(features.reshaped([b, h * w, c])), ref, tolerance: tol))
            }
        }

        // d: one CFG velocity, without a cache (the official inputs) and from a reused prompt cache.
        if let tokens = fx["gen.cfg_tokens"], let z = fx["gen.vel_z"], let t = fx["gen.vel_t"], let mask = fx["gen.attention_mask"] {
            let b = z.dim(0)
            let zz = concatenated([z, z], axis: 0)
            let tt = t.broadcast(to: [2 * b])
            let prefix = model.languageModel.embed(tokens).slice(axis: 1, 0, tokens.dim(1) - 1)
            let v = model.velocity(latents: zz, t: tt, prefix: prefix, keyMask: mask)
            if let ref = fx["gen.llm_inputs_embeds"] {
                let (features, tEmb) = model.generationEncoder(NN.nchwToNHWC(zz), t: tt)
                let (n, h, w, c) = (features.dim(0), features.dim(1), features.dim(2), features.dim(3))
                let embeds = concatenated([prefix, tEmb.expandedDims(axis: 1), model.generationEncoderAligner(features.reshaped([n, h * w, c]))], axis: 1)
                add(try compare("gen.llm_inputs_embeds", embeds, ref, tolerance: tol))
                let hidden = model.languageModel.forward(inputsEmbeds: embeds, keyMask: mask).lastHiddenState.slice(axis: 1, -(h * w))
                if let ref = fx["gen.llm_hidden_last"] { add(try compare("gen.llm_hidden_last", hidden, ref, tolerance: tol)) }
                if let ref = fx["gen.dec_in"] {
                    let decIn = model.generationDecoderAligner(model.generationDecoderAlignerNorm(hidden)).reshaped([n, h, w, -1])
                    add(try compare("gen.dec_in", NN.nhwcToNCHW(decIn), ref, tolerance: tol))
                }
            }
            if let ref = fx["gen.velocity_cond"] { add(try compare("gen.velocity_cond", v.slice(axis: 0, 0, b), ref, tolerance: tol)) }
            if let ref = fx["gen.velocity_uncond"] { add(try compare("gen.velocity_uncond", v.slice(axis: 0, b, 2 * b), ref, tolerance: tol)) }
            if let ref = fx["gen.velocity_cfg"] {
                let w = fx.cfgWeight
                let cfg = v.slice(axis: 0, 0, b) * w - v.slice(axis: 0, b, 2 * b) * (w - 1)
                add(try compare("gen.velocity_cfg", cfg, ref, tolerance: tol))
            }
        }

        // e: the Euler sampler, with the prompt cache reused across steps.
        if let promptIDs = fx["gen.sample_prompt_ids"], let z0 = fx["gen.z0"], let final = fx["gen.z_final"] {
            let refSteps = fx.numbered("gen.z_step")
            let guidance = GuidanceBatch(promptIDs: try promptIDs.values(Int.self), padID: try fx.specialID("pad"))
            if let refMask = fx["gen.sample_attention_mask"] {
                let n = refMask.dim(1) - guidance.promptIDs.count
                add(try compare("gen.sample_attention_mask", guidance.keyMask(images: z0.dim(0), imageTokens: n), refMask, tolerance: 0))
            }
            var steps: [Tensor] = []
            let sampler = RectifiedFlowSampler(steps: Swift.max(refSteps.count, 1), cfgWeight: fx.cfgWeight, reusePromptCache: true)
            let z = try sampler.sample(model: model, guidance: guidance, initialNoise: z0, onStep: { _, z in steps.append(z) })
            for (i, ref) in refSteps.enumerated() { add(try compare("gen.z_step.\(i)", steps[i], ref, tolerance: chainTolerance, note: "prompt cache reused")) }
            add(try compare("gen.z_final", z, final, tolerance: chainTolerance, note: "prompt cache reused"))
        }

        // f: VAE.
        let vaeDir = fixtureDirectory.appendingPathComponent("vae")
        if FileManager.default.fileExists(atPath: vaeDir.path), fx["vae.decode_in"] != nil || fx["vae.encode_in"] != nil {
            let vae = try AutoencoderKL.load(directory: vaeDir, dtype: weights == .int8 ? .bfloat16 : weights)  // int8 is for the LLM only
            if let x = fx["vae.decode_in"], let ref = fx["vae.decoded"] {
                add(try compare("vae.decoded", vae.decode(x), ref, tolerance: chainTolerance))
            }
            if let x = fx["vae.encode_in"] {
                let (mean, logvar) = vae.encode(x)
                if let ref = fx["vae.latent_mean"] { add(try compare("vae.latent_mean", mean, ref, tolerance: chainTolerance)) }
                if let ref = fx["vae.latent_logvar"] { add(try compare("vae.latent_logvar", logvar, ref, tolerance: chainTolerance)) }
                if let ref = fx["vae.latent_std"] { add(try compare("vae.latent_std", (logvar * 0.5).exp(), ref, tolerance: chainTolerance)) }
            }
        }
        return report
    }
}
