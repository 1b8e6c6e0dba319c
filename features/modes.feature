Feature: Three ways to run a crew, one engine
  kickoff runs on the calling thread (parallel tasks on worker threads), kickoff_async runs
  natively on the event loop, and the for-each forms run one independent kickoff per input.
  None of them touches litellm's process-wide state, and a failure leaves as one error of
  its own type that carries what was spent.

  Scenario: Two hundred crews under kickoff_async really run at once
    Given the server answers every request after 1000 ms
    And a crew of one task marked with the crew's number
    When 200 kickoffs of it are gathered with kickoff_async
    Then every kickoff's usage equals the server's count for its marker
    And the server had more than 150 requests in flight at once
    But the same 200 kickoffs as asyncio.to_thread(kickoff), answered after 100 ms, never had more than 32 in flight

  Scenario: crewline leaves litellm's callback lists exactly as the user set them
    Given threads switch every microsecond
    And the user registered a callback of their own in litellm's success_callback
    And a crew of one task marked with the crew's number
    When 8 kickoffs on threads and 8 gathered kickoff_async run together, twice over
    Then no kickoff failed and each reported the server's count for its marker
    And litellm's callback lists are exactly as before, the user's callback still in place
    But one litellm call made with callbacks= does change those lists (the control)

  Scenario: A failing parallel task under kickoff_async cancels its siblings and raises its own error
    Given a crew with a slow parallel task, a parallel task the server rejects with 401, and a last task
    When the crew is kicked off with kickoff_async
    Then the kickoff raises a ProviderError with status 401, not an exception group
    And it raised well before the slow task's answer was due
    And the slow task's request was abandoned, so nothing is left in flight
    And the error carries the usage spent, equal to the server's count
    And the last task never ran
    But a plain asyncio.gather of the same two requests leaves the slow one in flight (the control)

  Scenario: A failing parallel task under kickoff surfaces after the tasks in flight finish
    Given a crew with a parallel task answered after 300 ms, a parallel task the server rejects with 401, and a last task
    When the crew is kicked off
    Then the kickoff raises a ProviderError with status 401, not an exception group
    And the slow task finished first: its answer is on the error's usage records
    And the error carries the usage spent, equal to the server's count
    And the last task never ran

  Scenario: kickoff_for_each_async runs one kickoff per input, at most max_concurrency at once
    Given the server answers every request after 30 ms
    And a crew of one task marked with the crew's number
    When it is kicked off for each of 12 inputs with kickoff_for_each_async, at most 4 at once
    Then the outputs come back in input order
    And every kickoff's usage equals the server's count for its marker
    And the server never had more than 4 requests in flight
