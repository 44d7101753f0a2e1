// A loopback stand-in for the Hugging Face Hub (HttpListener on 127.0.0.1, a free port) that answers the way the
// real Hub does: /api/{models|datasets}/{repo}/revision/{rev} with siblings[].rfilename, and
// /[datasets/]{repo}/resolve/{rev}/{file} with ETag (git blob sha1) for small files or X-Linked-Etag (sha256) and
// X-Linked-Size for LFS files, X-Repo-Commit, Range support, and faults on demand (a dropped connection, a wrong
// hash, a required token).
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace SharpTune.Tests.Hub;

public sealed class FakeHub : IDisposable
{
    public const string Commit = "0123456789abcdef0123456789abcdef01234567";
    private readonly HttpListener _listener = new();
    private readonly Task _loop;
    private readonly object _gate = new();

    public FakeHub()
    {
        for (var tries = 0; ; tries++)
        {
            var probe = new TcpListener(IPAddress.Loopback, 0);
            probe.Start();
            var port = ((IPEndPoint)probe.LocalEndpoint).Port;
            probe.Stop();
            try
            {
                _listener.Prefixes.Clear();
                _listener.Prefixes.Add($"http://127.0.0.1:{port}/");
                _listener.Prefixes.Add($"http://localhost:{port}/"); // a second host name stands in for the CDN
                Port = port;
                _listener.Start();
                Endpoint = $"http://127.0.0.1:{port}";
                break;
            }
            catch (HttpListenerException) when (tries < 5) { }
        }
        _loop = Task.Run(LoopAsync);
    }

    public string Endpoint { get; } = "";

    public int Port { get; }

    /// <summary>When true, LFS files answer 302 to a "CDN" on another host name (localhost), as the real Hub does.</summary>
    public bool RedirectLfs { get; set; }

    /// <summary>repo id -> (file -> bytes).</summary>
    public Dictionary<string, Dictionary<string, byte[]>> Repos { get; } = [];

    /// <summary>Files served as LFS (X-Linked-Etag sha256) rather than plain git (ETag sha1).</summary>
    public HashSet<string> LfsFiles { get; } = [];

    /// <summary>Files whose advertised hash is wrong.</summary>
    public HashSet<string> CorruptHash { get; } = [];

    /// <summary>Files whose first full GET is cut off half way.</summary>
    public HashSet<string> DropOnce { get; } = [];

    /// <summary>When set, every request must carry "Bearer {RequiredToken}" or gets 401.</summary>
    public string? RequiredToken { get; set; }

    /// <summary>Every request: method, path, Range header, Authorization header.</summary>
    public List<(string Method, string Path, string? Range, string? Authorization)> Requests { get; } = [];

    public static string Sha256(byte[] b) => Convert.ToHexStringLower(SHA256.HashData(b));

    public static string GitSha1(byte[] b) =>
        Convert.ToHexStringLower(SHA1.HashData([.. Encoding.ASCII.GetBytes($"blob {b.Length}\0"), .. b]));

    private async Task LoopAsync()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext ctx;
            try { ctx = await _listener.GetContextAsync(); }
            catch (Exception) { return; }
            _ = Task.Run(() => Handle(ctx));
        }
    }

    private void Handle(HttpListenerContext ctx)
    {
        var req = ctx.Request;
        var res = ctx.Response;
        var path = Uri.UnescapeDataString(req.Url!.AbsolutePath);
        lock (_gate) Requests.Add((req.HttpMethod, path, req.Headers["Range"], req.Headers["Authorization"]));
        try
        {
            if (RequiredToken is not null && !path.StartsWith("/cdn/", StringComparison.Ordinal) && req.Headers["Authorization"] != $"Bearer {RequiredToken}")
            {
                Status(res, 401);
                return;
            }
            var parts = path.Trim('/').Split('/');
            if (parts.Length >= 6 && parts[0] == "api" && parts[4] == "revision")
            {
                var repo = $"{parts[2]}/{parts[3]}";
                if (!Repos.TryGetValue(repo, out var files)) { Status(res, 404); return; }
                var json = JsonSerializer.Serialize(new { id = repo, sha = Commit, siblings = files.Keys.Select(f => new { rfilename = f }) });
                var bytes = Encoding.UTF8.GetBytes(json);
                res.ContentType = "application/json";
                res.ContentLength64 = bytes.Length;
                res.OutputStream.Write(bytes);
                res.Close();
                return;
            }
            if (parts[0] == "cdn")
            {
                var cdnRepo = $"{parts[1]}/{parts[2]}";
                var cdnFile = string.Join('/', parts.Skip(3));
                res.Headers["ETag"] = "\"cdn-object-etag\"";
                Serve(req, res, Repos[cdnRepo][cdnFile], cdnFile);
                return;
            }
            var offset = parts[0] == "datasets" ? 1 : 0;
            if (parts.Length >= offset + 5 && parts[offset + 2] == "resolve")
            {
                var repo = $"{parts[offset]}/{parts[offset + 1]}";
                var file = string.Join('/', parts.Skip(offset + 4));
                if (!Repos.TryGetValue(repo, out var files) || !files.TryGetValue(file, out var data)) { Status(res, 404); return; }
                res.Headers["X-Repo-Commit"] = Commit;
                if (LfsFiles.Contains(file))
                {
                    res.Headers["X-Linked-Etag"] = $"\"{(CorruptHash.Contains(file) ? new string('a', 64) : Sha256(data))}\"";
                    res.Headers["X-Linked-Size"] = data.Length.ToString();
                }
                else res.Headers["ETag"] = $"\"{(CorruptHash.Contains(file) ? new string('b', 40) : GitSha1(data))}\"";
                if (RedirectLfs && LfsFiles.Contains(file))
                {
                    res.StatusCode = 302;
                    res.RedirectLocation = $"http://localhost:{Port}/cdn/{repo}/{file}";
                    res.ContentLength64 = 0;
                    res.Close();
                    return;
                }
                Serve(req, res, data, file);
                return;
            }
            Status(res, 404);
        }
        catch (Exception) { try { res.Abort(); } catch (Exception) { } }
    }

    private void Serve(HttpListenerRequest req, HttpListenerResponse res, byte[] data, string file)
    {
        if (req.HttpMethod == "HEAD")
        {
            res.ContentLength64 = data.Length;
            res.Close();
            return;
        }
        var start = 0;
        if (req.Headers["Range"] is { } range && range.StartsWith("bytes=", StringComparison.Ordinal))
        {
            start = int.Parse(range["bytes=".Length..].TrimEnd('-'));
            res.StatusCode = 206;
            res.Headers["Content-Range"] = $"bytes {start}-{data.Length - 1}/{data.Length}";
        }
        res.ContentLength64 = data.Length - start;
        bool drop;
        lock (_gate) drop = start == 0 && DropOnce.Remove(file);
        if (drop)
        {
            res.OutputStream.Write(data, 0, data.Length / 2);
            res.OutputStream.Flush();
            Thread.Sleep(50);
            res.Abort(); // the connection drops half way
            return;
        }
        res.OutputStream.Write(data, start, data.Length - start);
        res.Close();
    }

    private static void Status(HttpListenerResponse res, int code)
    {
        res.StatusCode = code;
        res.ContentLength64 = 0;
        res.Close();
    }

    public void Dispose()
    {
        _listener.Stop();
        _listener.Close();
        try { _loop.Wait(2000); } catch (AggregateException) { }
    }
}
