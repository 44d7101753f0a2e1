// A Hugging Face Hub client for `sharptune download` and for code that resolves model or dataset ids:
// lists a repo's files (GET {endpoint}/api/{models|datasets}/{repo}/revision/{rev} -> siblings[].rfilename), then
// for each file asks for its metadata (HEAD {endpoint}/[datasets/]{repo}/resolve/{rev}/{file}, without following
// the redirect, reading X-Linked-Size / X-Linked-Etag for LFS files and Content-Length / ETag otherwise, plus
// X-Repo-Commit), downloads to `<file>.incomplete` resuming with `Range: bytes=N-` after a dropped connection,
// checks size and hash (sha256 for LFS etags, git blob sha1 for plain-git etags), and renames into place.
// Writes original_repo_id.json as torchtune's `tune download` does. The token is sent as a Bearer header only to
// the Hub's own host (never to a CDN host it redirects to) and never appears in messages.
// References: huggingface_hub/file_download.py (get_hf_file_metadata, http_get with resume), torchtune/_cli/download.py.
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace SharpTune.Hub;

/// <summary>Lists and downloads files of Hub repositories.</summary>
public sealed class HubClient : IDisposable
{
    /// <summary>The public Hub.</summary>
    public const string DefaultEndpoint = "https://huggingface.co";

    /// <summary>The environment variable that overrides the endpoint (as in huggingface_hub).</summary>
    public const string EndpointVariable = "HF_ENDPOINT";

    private const int MaxRedirects = 5;
    private readonly HttpClient _http;
    private readonly Uri _endpoint;

    /// <summary>Creates a client.</summary>
    /// <param name="endpoint">The Hub base URL; null uses <c>$HF_ENDPOINT</c>, else <see cref="DefaultEndpoint"/>.</param>
    /// <param name="handler">An HTTP handler to use (it must not follow redirects itself); null builds one.</param>
    public HubClient(string? endpoint = null, HttpMessageHandler? handler = null)
    {
        var e = endpoint ?? Environment.GetEnvironmentVariable(EndpointVariable);
        _endpoint = new Uri((string.IsNullOrWhiteSpace(e) ? DefaultEndpoint : e).TrimEnd('/') + "/");
        _http = new HttpClient(handler ?? new SocketsHttpHandler { AllowAutoRedirect = false, AutomaticDecompression = DecompressionMethods.None })
        {
            Timeout = Timeout.InfiniteTimeSpan,
        };
        _http.DefaultRequestHeaders.UserAgent.Add(new ProductInfoHeaderValue("sharptune", "0.1"));
    }

    /// <summary>The Hub base URL in use.</summary>
    public Uri Endpoint => _endpoint;

    /// <summary>Attempts per file before a download gives up (each attempt resumes where the last stopped).</summary>
    public int MaxAttempts { get; init; } = 4;

    /// <summary>Pause before retry n is n times this.</summary>
    public TimeSpan RetryDelay { get; init; } = TimeSpan.FromMilliseconds(250);

    /// <summary>Timeout for each request's headers and for each read of the body.</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Lists a repo's files at a revision.</summary>
    /// <exception cref="HubException">Unreachable Hub, 401/403/404, or a malformed answer.</exception>
    public async Task<IReadOnlyList<string>> ListFilesAsync(string repoId, HubRepoType repoType, string revision = "main",
        string? token = null, CancellationToken cancellationToken = default)
    {
        HubNames.CheckRepoId(repoId);
        var kind = repoType == HubRepoType.Dataset ? "datasets" : "models";
        var url = new Uri(_endpoint, $"api/{kind}/{repoId}/revision/{Uri.EscapeDataString(revision)}");
        using var response = await SendAsync(HttpMethod.Get, url, token, null, repoId, repoType, revision, cancellationToken).ConfigureAwait(false);
        var json = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            using var doc = JsonDocument.Parse(json);
            if (!doc.RootElement.TryGetProperty("siblings", out var siblings) || siblings.ValueKind != JsonValueKind.Array)
                throw new HubException($"the Hub's answer for {Describe(repoId, repoType)} has no 'siblings' list ({url})");
            return [.. siblings.EnumerateArray().Select(s => s.GetProperty("rfilename").GetString() ?? "")];
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new HubException($"the Hub's answer for {Describe(repoId, repoType)} is not the expected JSON ({url}): {e.Message}", inner: e);
        }
    }

    /// <summary>
    /// Downloads every file of a repo (except those matching <paramref name="ignorePatterns"/>) into
    /// <paramref name="outputDir"/>, resuming partial files, verifying size and hash, and writing
    /// <c>original_repo_id.json</c>. Files already present and verified are not fetched again.
    /// </summary>
    /// <exception cref="HubException">Listing or a file failed (the message names the file and the cause).</exception>
    public async Task<HubDownloadResult> DownloadAsync(string repoId, HubRepoType repoType, string outputDir,
        IReadOnlyList<string>? ignorePatterns = null, string? token = null, string revision = "main",
        IProgress<HubFileProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var files = await ListFilesAsync(repoId, repoType, revision, token, cancellationToken).ConfigureAwait(false);
        foreach (var f in files) HubNames.CheckFileName(f);
        var root = Path.GetFullPath(outputDir);
        Directory.CreateDirectory(root);
        var downloaded = new List<string>();
        var upToDate = new List<string>();
        var ignored = new List<string>();
        string? commit = null;
        foreach (var file in files)
        {
            if (ignorePatterns?.Any(p => HubNames.Matches(file, p)) == true) { ignored.Add(file); continue; }
            var (fetched, fileCommit) = await DownloadFileAsync(repoId, repoType, file, root, token, revision, progress, cancellationToken).ConfigureAwait(false);
            commit ??= fileCommit;
            (fetched ? downloaded : upToDate).Add(file);
        }
        var marker = JsonSerializer.Serialize(new Dictionary<string, string?>
        {
            ["repo_id"] = repoId, ["repo_type"] = repoType == HubRepoType.Dataset ? "dataset" : "model", ["revision"] = revision, ["commit"] = commit,
        }, new JsonSerializerOptions { WriteIndented = true });
        WriteAtomically(Path.Combine(root, "original_repo_id.json"), Encoding.UTF8.GetBytes(marker));
        return new HubDownloadResult(root, downloaded, upToDate, ignored, commit);
    }

    /// <summary>Downloads one file into <paramref name="outputDir"/>; returns whether it was fetched (false: already there).</summary>
    public async Task<(bool Fetched, string? Commit)> DownloadFileAsync(string repoId, HubRepoType repoType, string file, string outputDir,
        string? token = null, string revision = "main", IProgress<HubFileProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        HubNames.CheckRepoId(repoId);
        HubNames.CheckFileName(file);
        var root = Path.GetFullPath(outputDir);
        var destination = Path.GetFullPath(Path.Combine(root, file));
        if (!destination.StartsWith(root.TrimEnd(Path.DirectorySeparatorChar) + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            throw new HubException($"refusing repo file name '{file}': it resolves outside {root}");
        var prefix = repoType == HubRepoType.Dataset ? "datasets/" : "";
        var url = new Uri(_endpoint, $"{prefix}{repoId}/resolve/{Uri.EscapeDataString(revision)}/{string.Join('/', file.Split('/').Select(Uri.EscapeDataString))}");

        // Metadata from the Hub's own answer: same-host redirects (renamed repos) are followed, a redirect to another
        // host (the CDN serving LFS files, which does not send the X-Linked-* headers) is not.
        string? commit;
        long? size;
        string? etag;
        using (var head = await SendAsync(HttpMethod.Head, url, token, null, repoId, repoType, revision, cancellationToken, stopAtOtherHost: true).ConfigureAwait(false))
        {
            commit = Header(head, "X-Repo-Commit");
            var linkedSize = Header(head, "X-Linked-Size");
            var redirected = (int)head.StatusCode is >= 300 and < 400;
            size = long.TryParse(linkedSize, out var ls) ? ls : redirected ? null : head.Content.Headers.ContentLength;
            etag = NormalizeEtag(Header(head, "X-Linked-Etag") ?? head.Headers.ETag?.Tag ?? Header(head, "ETag"));
        }

        if (File.Exists(destination) && (size is null || new FileInfo(destination).Length == size) && HashMatches(destination, etag, out _))
        {
            progress?.Report(new HubFileProgress(file, new FileInfo(destination).Length, size, true));
            return (false, commit);
        }

        Directory.CreateDirectory(Path.GetDirectoryName(destination)!);
        var partial = destination + ".incomplete";
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await FetchIntoAsync(url, partial, file, size, token, repoId, repoType, revision, progress, cancellationToken).ConfigureAwait(false);
                break;
            }
            catch (Exception e) when (attempt < MaxAttempts && IsTransient(e) && !cancellationToken.IsCancellationRequested)
            {
                await Task.Delay(RetryDelay * attempt, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (IsTransient(e) && !cancellationToken.IsCancellationRequested)
            {
                throw new HubException($"downloading '{file}' failed after {MaxAttempts} attempts ({e.Message}); run again to resume from {new FileInfo(partial).Length} bytes", inner: e);
            }
        }

        var length = new FileInfo(partial).Length;
        if (size is { } expectedSize && length != expectedSize)
        {
            File.Delete(partial);
            throw new HubException($"'{file}': size mismatch, the Hub said {expectedSize} bytes, received {length}");
        }
        if (!HashMatches(partial, etag, out var actual))
        {
            File.Delete(partial);
            throw new HubException($"'{file}': {(etag!.Length == 64 ? "sha256" : "git sha1")} mismatch, expected {etag}, got {actual}; the partial file was removed");
        }
        File.Move(partial, destination, overwrite: true);
        progress?.Report(new HubFileProgress(file, length, size, true));
        return (true, commit);
    }

    private async Task FetchIntoAsync(Uri url, string partial, string file, long? size, string? token, string repoId, HubRepoType repoType,
        string revision, IProgress<HubFileProgress>? progress, CancellationToken cancellationToken)
    {
        var have = File.Exists(partial) ? new FileInfo(partial).Length : 0;
        if (size is { } s && have > s) { File.Delete(partial); have = 0; }
        if (size is { } s2 && have == s2 && have > 0) return; // complete already; verified by the caller
        var range = have > 0 ? new RangeHeaderValue(have, null) : null;
        using var response = await SendAsync(HttpMethod.Get, url, token, range, repoId, repoType, revision, cancellationToken).ConfigureAwait(false);
        var append = have > 0 && response.StatusCode == HttpStatusCode.PartialContent;
        if (!append) have = 0; // the server ignored the range: start over
        await using var body = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        await using var output = new FileStream(partial, append ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16, useAsync: true);
        var buffer = new byte[1 << 16];
        var lastReport = have;
        while (true)
        {
            using var readTimeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            readTimeout.CancelAfter(RequestTimeout);
            int n;
            try { n = await body.ReadAsync(buffer, readTimeout.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                throw new IOException($"no data for {RequestTimeout.TotalSeconds:F0} s");
            }
            if (n == 0) break;
            await output.WriteAsync(buffer.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
            have += n;
            if (have - lastReport >= 1 << 20) { progress?.Report(new HubFileProgress(file, have, size, false)); lastReport = have; }
        }
        await output.FlushAsync(cancellationToken).ConfigureAwait(false);
        if (size is { } expected && have < expected) throw new IOException($"connection closed after {have} of {expected} bytes");
    }

    // Sends a request, following redirects by hand so the token never travels to another host.
    private async Task<HttpResponseMessage> SendAsync(HttpMethod method, Uri url, string? token, RangeHeaderValue? range, string repoId,
        HubRepoType repoType, string revision, CancellationToken cancellationToken, bool stopAtOtherHost = false)
    {
        var current = url;
        for (var hop = 0; ; hop++)
        {
            using var request = new HttpRequestMessage(method, current);
            request.Headers.AcceptEncoding.Add(new StringWithQualityHeaderValue("identity"));
            if (range is not null) request.Headers.Range = range;
            if (!string.IsNullOrEmpty(token) && current.Host == _endpoint.Host && current.Port == _endpoint.Port)
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            HttpResponseMessage response;
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(RequestTimeout);
            try { response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token).ConfigureAwait(false); }
            catch (HttpRequestException e) { throw new HubException($"cannot reach {current.GetLeftPart(UriPartial.Authority)}: {e.Message} (check the network, or set {EndpointVariable})", inner: e); }
            catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
            {
                throw new HubException($"no answer from {current.GetLeftPart(UriPartial.Authority)} within {RequestTimeout.TotalSeconds:F0} s", inner: e);
            }
            var code = (int)response.StatusCode;
            if (code is >= 300 and < 400 && response.Headers.Location is { } location)
            {
                var next = location.IsAbsoluteUri ? location : new Uri(current, location);
                if (stopAtOtherHost && (next.Host != current.Host || next.Port != current.Port)) return response;
                response.Dispose();
                if (hop >= MaxRedirects) throw new HubException($"too many redirects fetching {url}");
                current = next;
                continue;
            }
            if (response.IsSuccessStatusCode) return response;
            var what = Describe(repoId, repoType);
            var tokenHint = string.IsNullOrEmpty(token) ? "pass --hf-token or set HF_TOKEN" : "the token given was refused; check it has read access";
            var message = code switch
            {
                401 => $"401 Unauthorized for {what}: it is private, gated or does not exist; {tokenHint}",
                403 => $"403 Forbidden for {what}: the repo is gated; accept its terms on the Hub with the account of your token",
                404 => $"404 Not Found: {what} or its revision '{revision}' does not exist at {_endpoint.GetLeftPart(UriPartial.Authority)} ({current.AbsolutePath})",
                416 => $"416 Range Not Satisfiable for {current.AbsolutePath}: delete the .incomplete file and retry",
                _ => $"HTTP {code} {response.ReasonPhrase} from {current.GetLeftPart(UriPartial.Path)}",
            };
            response.Dispose();
            throw new HubException(message, code);
        }
    }

    private static bool IsTransient(Exception e) =>
        e is IOException or HttpIOException || (e is HubException h && (h.StatusCode is null or >= 500 || h.InnerException is HttpRequestException));

    private static string? Header(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) ? values.FirstOrDefault()
        : response.Content.Headers.TryGetValues(name, out var contentValues) ? contentValues.FirstOrDefault() : null;

    // `W/"abc"` -> `abc`; null when the value is not a hash we know how to check.
    private static string? NormalizeEtag(string? etag)
    {
        if (string.IsNullOrEmpty(etag)) return null;
        var e = etag.StartsWith("W/", StringComparison.Ordinal) ? etag[2..] : etag;
        e = e.Trim('"').ToLowerInvariant();
        return (e.Length is 64 or 40) && e.All(Uri.IsHexDigit) ? e : null;
    }

    // sha256 for 64-hex etags (LFS), git blob sha1 ("blob <size>\0" + bytes) for 40-hex etags (plain git).
    private static bool HashMatches(string path, string? etag, out string actual)
    {
        actual = "";
        if (etag is null) return true;
        using var stream = File.OpenRead(path);
        if (etag.Length == 64) actual = Convert.ToHexStringLower(SHA256.HashData(stream));
        else
        {
            using var sha1 = IncrementalHash.CreateHash(HashAlgorithmName.SHA1);
            sha1.AppendData(Encoding.ASCII.GetBytes($"blob {stream.Length}\0"));
            var buffer = new byte[1 << 16];
            int n;
            while ((n = stream.Read(buffer, 0, buffer.Length)) > 0) sha1.AppendData(buffer, 0, n);
            actual = Convert.ToHexStringLower(sha1.GetHashAndReset());
        }
        return actual == etag;
    }

    private static void WriteAtomically(string path, byte[] bytes)
    {
        var tmp = path + $".tmp{Environment.ProcessId}";
        File.WriteAllBytes(tmp, bytes);
        File.Move(tmp, path, overwrite: true);
    }

    private static string Describe(string repoId, HubRepoType type) => $"{(type == HubRepoType.Dataset ? "dataset" : "model")} repo '{repoId}'";

    /// <inheritdoc/>
    public void Dispose() => _http.Dispose();
}
