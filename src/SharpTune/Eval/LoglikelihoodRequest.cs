// Request and result types for log-likelihood scoring, mirroring lm-evaluation-harness's `loglikelihood` requests:
// a (context, continuation) string pair in, a (sum of continuation log-probs, is_greedy) pair out.
// Reference: lm_eval/api/model.py (TemplateLM.loglikelihood, _encode_pair).
namespace SharpTune.Eval;

/// <summary>One multiple-choice scoring request: how likely is <see cref="Continuation"/> after <see cref="Context"/>.</summary>
/// <param name="Context">The prompt (for multiple choice: the task's doc_to_text).</param>
/// <param name="Continuation">The scored text (for multiple choice: target delimiter + choice).</param>
public sealed record LoglikelihoodRequest(string Context, string Continuation);

/// <summary>A request after tokenisation: the token ids the model conditions on and the ids it is scored on.</summary>
/// <param name="Context">Context ids (no special tokens, or the prefix token alone for an empty context).</param>
/// <param name="Continuation">Continuation ids; the score is the sum of their log-probabilities.</param>
public sealed record EncodedRequest(IReadOnlyList<int> Context, IReadOnlyList<int> Continuation);

/// <summary>The harness's answer to a log-likelihood request.</summary>
/// <param name="LogLikelihood">Sum over continuation tokens of log p(token | everything before it).</param>
/// <param name="IsGreedy">True when every continuation token is the argmax of its predicted distribution.</param>
public readonly record struct LoglikelihoodResult(double LogLikelihood, bool IsGreedy);

/// <summary>Progress of a scoring run, in requests.</summary>
/// <param name="Done">Requests scored so far.</param>
/// <param name="Total">Requests in the run.</param>
public readonly record struct ScoringProgress(int Done, int Total);
