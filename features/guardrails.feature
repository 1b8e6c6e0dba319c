Feature: Guardrail retries, structured output and provider retries keep every token
  A task whose output a guardrail rejects runs again as a new attempt; a reply that is not
  the requested JSON gets a conversion request; a rate-limited request is retried. Every one
  of those requests is charged to the task, and the task's usage equals the server's count.

  Scenario: A guardrail that fails twice then passes: three attempts, every one charged
    Given a task "essay" whose guardrail rejects the first 2 outputs and accepts the third
    When the crew is kicked off
    Then the task "essay" took 3 attempts, the first 2 rejected with their feedback
    And the usage of "essay" equals the server's count for it, 3 requests
    And each attempt's usage equals the server's count for its own request
    And the third attempt's prompt carries the feedback of both rejections
    But the accepted attempt alone, as a rebuilt output would report it, is not the server's count

  Scenario: Exhausted guardrail retries raise a GuardrailError carrying exactly the served usage
    Given a task "essay" whose guardrail rejects every output, with 2 retries allowed
    When the crew is kicked off
    Then the kickoff fails with a GuardrailError for "essay" after 3 attempts, with the last feedback
    And the error's usage equals the server's count, 3 requests
    And the error's usage is the sum of its attempts' usage

  Scenario: A reply that is not JSON is converted, and the conversion is charged to the task
    Given a task "animal" that wants a pydantic Animal, and a model that first answers in prose
    When the crew is kicked off
    Then the output of "animal" is a valid Animal
    And the task's requests were an agent turn, then a conversion
    And the usage of "animal" equals everything the server served, 2 requests
    But the server's count for the task's own prompt alone is 1 request: the conversion is what makes the difference

  Scenario: A failed conversion is a failed attempt, and the task tries again
    Given a task "animal" that wants a pydantic Animal, a model that first answers in prose, and a first conversion that fails
    When the crew is kicked off
    Then the output of "animal" is a valid Animal
    And the task "animal" took 2 attempts, the first failed by its conversion
    And the usage of "animal" equals everything the server served, 3 requests

  Scenario: A guardrail written in words is judged by the model, and the judging is charged to the task
    Given a task "essay" with the guardrail "Mention at least one number", which the judge rejects once, then accepts
    When the crew is kicked off
    Then the task "essay" took 2 attempts, the first rejected by the judge with "no number in it"
    And the task's requests were an agent turn, a judgement, an agent turn, a judgement
    And the usage of "essay" equals everything the server served, 4 requests

  Scenario: A rate-limited request is retried by crewline, and both tries are on record
    Given a task "busy" whose first request the server answers with 429
    When the crew is kicked off
    Then the output of "busy" came from the second try
    And the usage of "busy" counts 1 failed and 1 successful request, as the server does

  Scenario: One request in five fails with 500 across 100 concurrent tasks, and every request is accounted for
    Given the server answers every request after 10 ms
    And the server fails every fifth request with 500
    And a crew of one task, retried at most once on a provider error
    When 100 kickoffs of it are gathered with kickoff_async, keeping errors
    Then every kickoff either completed or raised a ProviderError with status 500
    And the records of all kickoffs and errors account for every request the server saw
