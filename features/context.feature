Feature: The caller's context variables follow the work
  A ContextVar the caller set before a kickoff (a tenant id, a tracing span) is what the
  tools, task callbacks, guardrails and event handlers see, whichever way the crew runs, and
  nothing the engine sets leaks back to the caller. A bare threading.Thread is the control:
  it starts with an empty context, so the probe used below can fail.

  Scenario: A bare thread does not carry the caller's context (the control)
    Given the caller sets the tenant to "acme"
    When the probe is read on a bare threading.Thread
    Then the probe saw no tenant
    But read on a thread started in a copy of the caller's context, the probe saw "acme"

  Scenario Outline: Tools, callbacks, guardrails and event handlers see the caller's value <how>
    Given the caller sets the tenant to "<tenant>"
    And a crew of 3 tasks whose tool, callback, guardrail and event handler each read the probe
    When the crew runs <how>
    Then every task's tool, callback, guardrail and event handler saw "<tenant>" and the run's id
    And the tools of the first two tasks ran on <where>
    And the caller's context is as it was before the kickoff

    Examples:
      | how                                                | tenant   | where                  |
      | with kickoff, on the calling thread                | acme     | the caller's thread    |
      | with kickoff, two tasks on worker threads          | initech  | other threads          |
      | with kickoff_async                                 | globex   | other threads          |
      | with kickoff_async, two tasks as asyncio tasks     | umbrella | other threads          |

  Scenario: Each of thirty concurrent kickoff_async calls sees its own value
    Given a crew whose two tasks each call a tool that reads the probe, one of them in parallel
    When 30 kickoff_async calls of it are gathered, each after setting its own tenant
    Then the tools of every kickoff saw that kickoff's tenant and no other
