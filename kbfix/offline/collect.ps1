# kbfix offline collection script (protocol v1, remoting/PROTOCOL.md; kbfix/offline/__init__.py).
# Windows PowerShell 2.0 compatible. READ-ONLY: it runs the kbfix agent with the one request
# embedded below (read ops only, fixed at export) and writes one answer file. It takes no request
# from anywhere else. Run it on the server named below, as an administrator, e.g.:
#   powershell.exe -NoProfile -ExecutionPolicy Bypass -File .\HOST.kbfix-offline.ps1 [-OutDir D:\answers]
# then bring the answer file (HOST.kbfix-answer.txt) back to `kbfix check --answers DIR`.
param([string]$OutDir = '')

$ErrorActionPreference = 'Stop'
$kbfixHost = '__KBFIX_HOST__'
$kbfixComputer = '__KBFIX_COMPUTER__'
$kbfixNonce = '__KBFIX_NONCE__'
$kbfixCreated = '__KBFIX_CREATED__'
$kbfixKeyHex = '__KBFIX_KEY__'
$kbfixRequestB64 = '__KBFIX_REQUEST__'
$kbfixAgentB64 = @'
__KBFIX_AGENT__
'@

function ConvertFrom-Hex([string]$hex) {
    $bytes = New-Object byte[] ($hex.Length / 2)
    for ($i = 0; $i -lt $bytes.Length; $i++) { $bytes[$i] = [Convert]::ToByte($hex.Substring(2 * $i, 2), 16) }
    return ,$bytes
}

function ConvertTo-Hex([byte[]]$bytes) {
    $sb = New-Object System.Text.StringBuilder
    foreach ($b in $bytes) { [void]$sb.Append($b.ToString('x2')) }
    return $sb.ToString()
}

function New-Sha256 {
    # SHA256CryptoServiceProvider (.NET 3.5) works under the FIPS policy; SHA256Managed throws there.
    try { return (New-Object System.Security.Cryptography.SHA256CryptoServiceProvider) }
    catch { return (New-Object System.Security.Cryptography.SHA256Managed) }
}

function Get-HmacSha256Hex([byte[]]$key, [byte[]]$data) {
    # RFC 2104 HMAC built on the hash above (HMACSHA256 uses SHA256Managed and fails under FIPS).
    if ($key.Length -gt 64) { $key = (New-Sha256).ComputeHash($key) }
    $inner = New-Object byte[] (64 + $data.Length)
    $outer = New-Object byte[] 96
    for ($i = 0; $i -lt 64; $i++) {
        $k = 0
        if ($i -lt $key.Length) { $k = [int]$key[$i] }
        $inner[$i] = [byte]($k -bxor 0x36)
        $outer[$i] = [byte]($k -bxor 0x5c)
    }
    [Array]::Copy($data, 0, $inner, 64, $data.Length)
    $innerHash = (New-Sha256).ComputeHash($inner)
    [Array]::Copy($innerHash, 0, $outer, 64, 32)
    return (ConvertTo-Hex ((New-Sha256).ComputeHash($outer)))
}

function Get-NetBiosName([string]$name) {
    # [Environment]::MachineName is the NetBIOS name: upper case, at most 15 characters.
    $u = $name.ToUpperInvariant()
    if ($u.Length -gt 15) { $u = $u.Substring(0, 15) }
    return $u
}

if ((Get-NetBiosName ([Environment]::MachineName)) -ne (Get-NetBiosName $kbfixComputer)) {
    [Console]::Error.WriteLine('kbfix: this script is for computer ' + $kbfixComputer + ' (inventory host ' + $kbfixHost +
        '), not ' + [Environment]::MachineName + ': run it on ' + $kbfixComputer + '; nothing was collected')
    exit 1
}

$utf8 = New-Object System.Text.UTF8Encoding($false)
$requestBytes = [Convert]::FromBase64String($kbfixRequestB64)
$requestText = $utf8.GetString($requestBytes)

# Read-only by construction: the request may name read ops only (remoting/ops.py at export time).
$kbfixReadOps = @(__KBFIX_READ_OPS__)
foreach ($line in $requestText.Split([char]10)) {
    $fields = $line.Split([char]9)
    if ($fields[0] -eq 'op' -and -not ($kbfixReadOps -contains $fields[2])) {
        [Console]::Error.WriteLine('kbfix: refusing to run: the embedded request names op ' + $fields[2] + ', which is not read-only')
        exit 1
    }
}
$agentText = $utf8.GetString([Convert]::FromBase64String(($kbfixAgentB64 -replace '\s', '')))

# The agent writes its framed answer to [Console]::Out: capture it.
$writer = New-Object System.IO.StringWriter
$console = [Console]::Out
$global:LASTEXITCODE = 0
[Console]::SetOut($writer)
try { & ([ScriptBlock]::Create($agentText)) $requestText } finally { [Console]::SetOut($console) }
$exitCode = $LASTEXITCODE
if ($null -eq $exitCode) { $exitCode = 0 }

$lines = New-Object System.Collections.ArrayList
[void]$lines.Add("kbfix-offline-answer`t1")
[void]$lines.Add("host`t" + $kbfixHost)
[void]$lines.Add("nonce`t" + $kbfixNonce)
[void]$lines.Add("computer`t" + [Environment]::MachineName)
[void]$lines.Add("collected`t" + [DateTime]::UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", [Globalization.CultureInfo]::InvariantCulture))
[void]$lines.Add("request_sha256`t" + (ConvertTo-Hex ((New-Sha256).ComputeHash($requestBytes))))
[void]$lines.Add("exit_code`t" + $exitCode)
[void]$lines.Add("stdout`t" + [Convert]::ToBase64String($utf8.GetBytes($writer.ToString())))
$body = [string]::Join("`n", [string[]]$lines.ToArray()) + "`n"
$mac = Get-HmacSha256Hex (ConvertFrom-Hex $kbfixKeyHex) ([Text.Encoding]::ASCII.GetBytes($body))
$answer = $body + "hmac`t" + $mac + "`n"

if ($OutDir.Length -eq 0) { $OutDir = Split-Path -Parent $MyInvocation.MyCommand.Definition }
# .NET resolves relative paths against the process directory, not PowerShell's location.
$OutDir = (Resolve-Path -LiteralPath $OutDir).ProviderPath
$path = Join-Path $OutDir ($kbfixHost + '.kbfix-answer.txt')
[System.IO.File]::WriteAllText($path, $answer, [Text.Encoding]::ASCII)
Write-Host ('kbfix: answer written to ' + $path)
