$ErrorActionPreference = 'Stop'
$agent = $null; $request = $null
foreach ($line in $input) {
    $t = [string]$line
    if ($t.StartsWith('KBFIX/1 AGENT-GZIP ')) {
        $ms = New-Object IO.MemoryStream(,[Convert]::FromBase64String($t.Substring(19).Trim()))
        $gz = New-Object IO.Compression.GZipStream($ms, [IO.Compression.CompressionMode]::Decompress)
        $agent = (New-Object IO.StreamReader($gz, [Text.Encoding]::UTF8)).ReadToEnd()
    }
    elseif ($t.StartsWith('KBFIX/1 REQUEST ')) { $request = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($t.Substring(16).Trim())) }
}
if ($agent -eq $null -or $request -eq $null) { [Console]::Error.WriteLine('kbfix bootstrap: agent or request missing on stdin'); exit 1 }
& ([ScriptBlock]::Create($agent)) $request
exit $LASTEXITCODE
