$ErrorActionPreference='Stop'
function X([string]$b){$z=New-Object IO.Compression.GZipStream((New-Object IO.MemoryStream(,[Convert]::FromBase64String($b))),[IO.Compression.CompressionMode]::Decompress);(New-Object IO.StreamReader($z)).ReadToEnd()}
$a=$null;$r=$null
foreach($l in $input){$t=[string]$l;if($t.StartsWith('KBFIX/1 AGENT-GZIP ')){$a=X $t.Substring(19)}elseif($t.StartsWith('KBFIX/1 REQUEST-GZIP ')){$r=X $t.Substring(21)}}
if($a -eq $null -or $r -eq $null){[Console]::Error.WriteLine('kbfix bootstrap: agent or request missing on stdin');exit 1}
&([ScriptBlock]::Create($a)) $r
exit $LASTEXITCODE
