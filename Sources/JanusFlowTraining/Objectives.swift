import Foundation
import JanusFlow
import MLXEngine

// The three JanusFlow objectives (paper §3.3): autoregressive cross-entropy on response tokens, rectified
// flow in VAE latent space, and representation alignment (REPA) of the LLM's intermediate features with the
// understanding encoder's features of the clean image.

/// h_phi: the REPA projector, a three-layer MLP with SiLU from the LLM width to the understanding encoder's width.
public final class RepaProjector: Module {
    /// The three linear layers in order, with SiLU after the first two.
    public let layers: [Linear]

    /// Creates a freshly initialised MLP `inputWidth -> hiddenWidth -> hiddenWidth -> outputWidth`.
    public init(inputWidth: Int, hiddenWidth: Int, outputWidth: Int) {
        layers = [Linear(inputWidth, hiddenWidth), Linear(hiddenWidth, hiddenWidth), Linear(hiddenWidth, outputWidth)]
        super.init()
    }

    /// Maps LLM features `(..., inputWidth)` to `(..., outputWidth)`.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        layers[2](NN.silu(layers[1](NN.silu(layers[0](x)))))
    }
}

/// Everything a training run updates: the model (published names under `model.`) and the REPA projector.
public final class TrainingModules: Module {
    /// The JanusFlow model being trained.
    public let model: JanusFlowModel
    /// The REPA projector (LLM width to SigLIP width), stored under `repa_projector`; it exists even when REPA is off.
    @Child("repa_projector") public var repaProjector: RepaProjector

    /// Wraps `model` and adds a freshly initialised REPA projector with `repaHidden` hidden units.
    public init(model: JanusFlowModel, repaHidden: Int) {
        self.model = model
        super.init()
        repaProjector = RepaProjector(inputWidth: model.config.languageConfig.hiddenSize, hiddenWidth: repaHidden,
                                      outputWidth: model.config.siglip.width)
    }
}

/// A batch of image + conversation examples, right-padded.
public struct UnderstandingBatch {
    /// Token ids, `(B, T)` int32, padded with the pad id.
    public var ids: Tensor  // (B, T) int32
    /// Key mask, `(B, T)`: 1 at real tokens, 0 at padding; unused when `segments` is set.
    public var keyMask: Tensor  // (B, T) 1 for real tokens
    /// Targets, `(B, T)`: 1 at the response tokens whose prediction is scored.
    public var labelMask: Tensor  // (B, T) 1 where the token is a response token to predict
    /// The images, `(B, n, 3, S, S)`: each row's images in order (`n` is 1 unless rows are packed).
    public var pixels: Tensor  // (B, n, 3, S, S): the images of each row in order
    /// `(B, T)` bool, true at the positions whose embeddings come from the image.
    public var imageSeqMask: Tensor  // (B, T) bool
    /// Packed rows: (B, T) sample index per position (-1 for padding); attention stays inside a sample.
    public var segments: Tensor?
    /// With `segments`: (B, T) branch ids of shared-prefix examples (see `UnderstandingExample.sharingPrefix`).
    public var branches: Tensor?

    /// Creates a batch; `segments` and `branches` are only for packed or shared-prefix rows.
    public init(ids: Tensor, keyMask: Tensor, labelMask: Tensor, pixels: Tensor, imageSeqMask: Tensor, segments: Tensor? = nil,
                branches: Tensor? = nil) {
        self.ids = ids
        self.keyMask = keyMask
        self.labelMask = labelMask
        self.pixels = pixels
        self.imageSeqMask = imageSeqMask
        self.segments = segments
        self.branches = branches
    }
}

/// A batch of caption + image-latent examples; prompts are left-padded so the image tokens line up at the end.
public struct GenerationBatch {
    /// Prompt ids, `(B, L)` int32, each ending with the generation tag, whose slot the time embedding takes.
    public var promptIDs: Tensor  // (B, L) int32, ending with the generation tag (its slot is replaced by t_emb)
    /// Key mask, `(B, L - 1 + 1 + N)`, over the prompt without its last slot, the time embedding and the `N` image tokens.
    public var keyMask: Tensor  // (B, L - 1 + 1 + N): 0 at padding and, for dropped prompts, after BOS
    /// Clean image latents, `(B, 4, h, w)`, already multiplied by the VAE scaling factor.
    public var latents: Tensor  // (B, 4, h, w), already multiplied by the VAE scaling factor
    /// REPA targets, `(B, N, D_und)`; nil when any example of the batch lacks them.
    public var repaTarget: Tensor?  // (B, N, D_und): understanding-encoder features of the clean image

    /// Creates a batch from its tensors.
    public init(promptIDs: Tensor, keyMask: Tensor, latents: Tensor, repaTarget: Tensor?) {
        self.promptIDs = promptIDs
        self.keyMask = keyMask
        self.latents = latents
        self.repaTarget = repaTarget
    }
}

/// A batch of plain text, right-padded.
public struct TextBatch {
    /// Token ids, `(B, T)`, padded with the pad id.
    public var ids: Tensor  // (B, T)
    /// Key mask, `(B, T)`: 1 at real tokens, 0 at padding; unused when `segments` is set.
    public var keyMask: Tensor  // (B, T)
    /// Packed rows: sample index per position (-1 for padding) and the targets (every token but each BOS).
    public var segments: Tensor?
    /// Targets, `(B, T)`, 1 at the tokens to predict; nil scores every real token but the first of each row.
    public var labelMask: Tensor?

    /// Creates a batch; packed rows also pass `segments` and `labelMask`.
    public init(ids: Tensor, keyMask: Tensor, segments: Tensor? = nil, labelMask: Tensor? = nil) {
        self.ids = ids
        self.keyMask = keyMask
        self.segments = segments
        self.labelMask = labelMask
    }
}

/// The losses of a training step (paper §3.3): next-token cross-entropy, rectified flow and REPA.
public enum Objectives {
    /// Next-token cross-entropy averaged over the positions whose *target* is marked in `labelMask`.
    public static func nextTokenLoss(logits: Tensor, ids: Tensor, labelMask: Tensor) -> Tensor {
        // Every position's logits against the next id, the last position left out by the mask: the logits are read
        // in place rather than copied without their last position.
        let (b, t) = (ids.dim(0), ids.dim(1))
        let targets = concatenated([ids.slice(axis: 1, 1, t).asType(.int32), Tensor.zeros([b, 1], dtype: .int32)], axis: 1)
        let mask = concatenated([labelMask.slice(axis: 1, 1, t).asType(.float32), Tensor.zeros([b, 1])], axis: 1)
        return NN.crossEntropy(logits: logits, targets: targets, mask: mask)
    }

    /// L_AR on understanding data: only response tokens count.
    public static func understandingLoss(_ model: JanusFlowModel, _ batch: UnderstandingBatch) -> Tensor {
        let embeds = model.prepareInputsEmbeds(ids: batch.ids, pixels: batch.pixels, imageSeqMask: batch.imageSeqMask)
        let hidden = model.languageModel.forward(inputsEmbeds: embeds, keyMask: batch.segments == nil ? batch.keyMask : nil,
                                                 segments: batch.segments, branches: batch.branches).lastHiddenState
        return nextTokenLoss(logits: model.languageModel.logits(hidden), ids: batch.ids, labelMask: batch.labelMask)
    }

    /// L_AR on text: every real token after BOS.
    public static func textLoss(_ model: JanusFlowModel, _ batch: TextBatch) -> Tensor {
        let embeds = model.languageModel.embed(batch.ids)
        let hidden = model.languageModel.forward(inputsEmbeds: embeds, keyMask: batch.segments == nil ? batch.keyMask : nil,
                                                 segments: batch.segments).lastHiddenState
        return nextTokenLoss(logits: model.languageModel.logits(hidden), ids: batch.ids, labelMask: batch.labelMask ?? batch.keyMask)
    }

    /// Noise, times and the interpolated latents for one rectified-flow step: t ~ logit-normal(mean, std),
    /// z_t = t x + (1 - t) z0 (t = 0 is noise), target x - z0.
    public struct FlowSample {
        /// Times, `(B,)`, between 0 and 1; 0 is pure noise.
        public let t: Tensor  // (B,) in [0, 1]
        /// Interpolated latents `t x + (1 - t) z0`, shaped like the input latents.
        public let zt: Tensor
        /// The velocity to predict, `x - z0`.
        public let target: Tensor
    }

    /// Draws noise `z0` and times from `key` and interpolates `latents` `(B, C, h, w)` for one rectified-flow step.
    public static func flowSample(latents x: Tensor, key: RandomKey, logitMean: Double = 0, logitStd: Double = 1) -> FlowSample {
        let keys = key.split(into: 2)
        let b = x.dim(0)
        let z0 = Random.normal(x.shape, key: keys[0])
        let u = Random.normal([b], key: keys[1])
        let t = (logitMean == 0 && logitStd == 1 ? u : u * logitStd + logitMean).sigmoid()
        let tb = t.reshaped([b, 1, 1, 1])
        return FlowSample(t: t, zt: tb * x + (1 - tb) * z0, target: x - z0)
    }

    /// Minus the mean cosine similarity between projected LLM features and the (stop-gradient) encoder features.
    public static func repaLoss(projected: Tensor, target: Tensor) -> Tensor {
        let target = target.stopGradient().asType(.float32)
        let p = projected.asType(.float32)
        let pn = p / (p.square().sum(axis: -1, keepDims: true).sqrt() + 1e-8)
        let tn = target / (target.square().sum(axis: -1, keepDims: true).sqrt() + 1e-8)
        return -(pn * tn).sum(axis: -1).mean()
    }

    /// L_RF (+ REPA when the batch has targets and `repaLayer` is set). Returns (rf, repa).
    public static func generationLoss(_ modules: TrainingModules, _ batch: GenerationBatch, key: RandomKey,
                                      repaLayer: Int?, timeLogitMean: Double = 0, timeLogitStd: Double = 1) -> (rf: Tensor, repa: Tensor?) {
        let model = modules.model
        let sample = flowSample(latents: batch.latents.asType(.float32), key: key, logitMean: timeLogitMean, logitStd: timeLogitStd)
        let l = batch.promptIDs.dim(1)
        let prefix = model.languageModel.embed(batch.promptIDs).slice(axis: 1, 0, l - 1)
        let useRepa = repaLayer != nil && batch.repaTarget != nil
        let (v, hidden) = model.velocityAndHidden(latents: sample.zt, t: sample.t * 1000, prefix: prefix,
                                                  keyMask: batch.keyMask, hiddenLayer: useRepa ? repaLayer : nil)
        let rf = NN.mseLoss(v.asType(.float32), sample.target)
        guard useRepa, let hidden, let target = batch.repaTarget else { return (rf, nil) }
        return (rf, repaLoss(projected: modules.repaProjector(hidden), target: target))
    }
}
