"""remoting: how kbfix talks to a Windows host over WS-Management (see PROTOCOL.md)."""
