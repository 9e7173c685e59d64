-- A node that stops: whatever it still holds is released now rather than
-- when its lease runs out.
drop_node(NODE)
promote()
return { 'ok' }
