$ErrorActionPreference = 'Stop'
$agent = $null; $request = $null
foreach ($line in $input) {
    $t = [string]$line
    if ($t.StartsWith('KBFIX/1 AGENT ')) { $agent = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($t.Substring(14).Trim())) }
    elseif ($t.StartsWith('KBFIX/1 REQUEST ')) { $request = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($t.Substring(16).Trim())) }
}
if ($agent -eq $null -or $request -eq $null) { [Console]::Error.WriteLine('kbfix bootstrap: agent or request missing on stdin'); exit 1 }
& ([ScriptBlock]::Create($agent)) $request
exit $LASTEXITCODE
